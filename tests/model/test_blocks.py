"""Inserted blocks: exact parameter counts, identity init, T5 position bias and decoder KV cache."""
import pytest
import torch

from codecl.errors import ConfigError
from codecl.model.blocks import BlockSlot, new_block
from helpers import codet5_small_config, make_base, tiny_config


def test_codet5_small_shapes():
    model, info = make_base(codet5_small_config())
    assert info.parameters == 60_492_288
    block = new_block(model, "encoder", 6, "identity")
    assert sum(p.numel() for p in block.parameters()) == 3_146_752  # no relative-position table: it lives in block 0


@pytest.mark.parametrize("stack,position", [("encoder", -1), ("encoder", 1), ("decoder", 2), ("decoder", -1)])
def test_identity_init_is_exact_and_generation_unchanged(stack, position):
    model, _ = make_base(tiny_config())
    x, y = torch.randint(3, 90, (2, 9)), torch.randint(3, 90, (2, 6))
    with torch.no_grad():
        ref_logits = model(input_ids=x, labels=y).logits
        ref_gen = model.generate(input_ids=x, max_new_tokens=8, do_sample=False)
    slot = BlockSlot(model, stack, position)
    slot.block = new_block(model, stack, position, "identity").eval()
    with torch.no_grad():
        assert torch.allclose(model(input_ids=x, labels=y).logits, ref_logits, atol=1e-5)
        assert torch.equal(model.generate(input_ids=x, max_new_tokens=8, do_sample=False), ref_gen)


@pytest.mark.parametrize("stack", ["encoder", "decoder"])
def test_non_identity_block_changes_output_and_cache_matches_no_cache(stack):
    model, _ = make_base(tiny_config())
    x = torch.randint(3, 90, (2, 9))
    with torch.no_grad():
        ref = model.generate(input_ids=x, max_new_tokens=8, do_sample=False, output_scores=True, return_dict_in_generate=True)
    slot = BlockSlot(model, stack, -1)
    slot.block = new_block(model, stack, -1, "copy").eval()
    with torch.no_grad():
        cached = model.generate(input_ids=x, max_new_tokens=8, do_sample=False, use_cache=True, output_scores=True, return_dict_in_generate=True)
        uncached = model.generate(input_ids=x, max_new_tokens=8, do_sample=False, use_cache=False, output_scores=True, return_dict_in_generate=True)
    assert not torch.allclose(cached.scores[0], ref.scores[0])
    assert torch.equal(cached.sequences, uncached.sequences)
    assert torch.allclose(torch.stack(cached.scores), torch.stack(uncached.scores), atol=1e-4)


def test_inits_differ_and_bad_position_is_refused():
    model, _ = make_base(tiny_config())
    ident, copy, rand = (new_block(model, "encoder", -1, k) for k in ("identity", "copy", "random"))
    assert torch.count_nonzero(ident.layer[0].SelfAttention.o.weight) == 0
    assert torch.count_nonzero(ident.layer[1].DenseReluDense.wo.weight) == 0
    assert torch.equal(copy.layer[0].SelfAttention.q.weight, model.encoder.block[2].layer[0].SelfAttention.q.weight)
    assert not torch.equal(rand.layer[0].SelfAttention.q.weight, copy.layer[0].SelfAttention.q.weight)
    with pytest.raises(ConfigError, match="layers 1..3"):
        new_block(model, "encoder", 7, "identity")


@pytest.mark.parametrize("stack", ["encoder", "decoder"])
def test_float32_block_trains_inside_a_bfloat16_base(stack):
    """model.frozen_dtype=bfloat16: the base's masks, biases and encoder states reach the float32
    block in its dtype; the block trains in float32 and generation runs."""
    from codecl.config import BlockConfig, LoraConfig, MethodConfig
    from codecl.methods.continual import ContinualModel

    base, info = make_base(tiny_config())
    base.to(torch.bfloat16)
    cfg = MethodConfig(lora=LoraConfig(rank=4, alpha=8), block=BlockConfig(stack=stack, position=2, init="copy"))
    cm = ContinualModel(base, "hybrid", cfg, info)
    cm.add_task("python")
    cm.activate("python")
    ids = torch.randint(3, 90, (2, 6))
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0  # padding: the additive mask is a float tensor of the base's dtype
    loss = cm(input_ids=ids, attention_mask=mask, labels=torch.randint(3, 90, (2, 4))).loss
    loss.backward()
    block = cm.blocks["python"]
    assert all(p.dtype == torch.float32 for p in block.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())
    out = cm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 2


@pytest.mark.parametrize("stack,position", [("encoder", 1), ("decoder", 2)])
def test_block_keeps_the_stack_outputs_with_attentions(stack, position):
    """`output_attentions=True` changes T5Block's output layout in transformers 4.x (weights between
    the biases); the hook keeps the neighbour's layout, so biases and attention lists stay right."""
    model, _ = make_base(tiny_config())
    x, y = torch.randint(3, 90, (2, 9)), torch.randint(3, 90, (2, 6))
    with torch.no_grad():
        ref = model(input_ids=x, labels=y, output_attentions=True)
    slot = BlockSlot(model, stack, position)
    slot.block = new_block(model, stack, position, "identity").eval()
    with torch.no_grad():
        out = model(input_ids=x, labels=y, output_attentions=True)
    assert torch.allclose(out.logits, ref.logits, atol=1e-5)
    for name in ("encoder_attentions", "decoder_attentions", "cross_attentions"):  # (empty where the attention kernel keeps none)
        assert len(getattr(out, name) or ()) == len(getattr(ref, name) or ())
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(getattr(out, name) or (), getattr(ref, name) or ()))


def test_unexpected_block_output_is_a_clear_error():
    model, _ = make_base(tiny_config())
    slot = BlockSlot(model, "encoder", 1)
    slot.block = new_block(model, "encoder", 1, "identity")
    with pytest.raises(RuntimeError, match="T5Block returned 1 outputs .*not supported here"):
        slot._hook(None, (torch.zeros(1, 2, 32),), {}, (torch.zeros(1, 2, 32),))
