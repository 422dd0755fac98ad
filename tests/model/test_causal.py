"""Decoder-only bases (issue 16): one set of checks over tiny random Llama, Qwen2, GPT-2 and StarCoder2.

Prompt format and loss masking, left-padded batched generation, a GPT-2-style tokenizer without a
pad token, and the inserted decoder layer (identity at insertion, its own KV-cache slot, position
inputs passed through, float32 inside a bfloat16 base, gradient checkpointing).
"""
import pytest
import torch

from causal_models import FAMILIES, make_causal, make_tokenizer, save_causal
from codecl.config import BlockConfig, EvalConfig, ModelConfig
from codecl.data.batching import IGNORE_INDEX, encode_pairs, pad_batch
from codecl.errors import ConfigError
from codecl.evaluation.generate import generate_codes, generate_with_flags
from codecl.model.base import enable_gradient_checkpointing
from codecl.model.causal import DEFAULT_PROMPT_TEMPLATE, configure_tokenizer, decoder_layers, prompt_format
from codecl.model.causal_blocks import cache_index, make_block, make_slot

CPU = torch.device("cpu")
DESCRIPTIONS = ["Return the sum of two numbers.", "Sort the list in place.", "Parse a URL into its parts and return them all."]
CODES = ["def add(a, b):\n    return a + b", "xs.sort()", "function parse(url) {\n  return new URL(url);\n}"]
EVAL = EvalConfig(max_new_tokens=8, batch_size=3)


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


def _batch(tokenizer, max_target_tokens: int = 64):
    enc = encode_pairs(tokenizer, DESCRIPTIONS, CODES, 32, max_target_tokens)
    return enc, pad_batch(enc.source_ids, enc.target_ids, tokenizer.pad_token_id)


# ---------------------------------------------------------------- prompt, labels, loss


def test_default_prompt_template_is_the_config_default():
    assert ModelConfig().prompt_template == DEFAULT_PROMPT_TEMPLATE
    with pytest.raises(ConfigError, match="prompt_template must contain"):
        ModelConfig(prompt_template="no placeholder")


def test_prompt_is_masked_out_of_the_loss_and_eos_follows_the_code(family):
    model, tokenizer = make_causal(family)
    enc, batch = _batch(tokenizer)
    fmt = prompt_format(tokenizer)
    prompts, _ = fmt.prompt_ids(tokenizer, DESCRIPTIONS, 32)
    eos = tokenizer.eos_token_id
    for prompt, code, inputs, labels in zip(prompts, CODES, enc.source_ids, enc.target_ids):
        code_ids = tokenizer(code, add_special_tokens=False)["input_ids"] + [eos]
        assert inputs == prompt + code_ids and labels == [IGNORE_INDEX] * len(prompt) + code_ids
    if family == "llama":  # the tokenizer's own specials: Llama's BOS opens the prompt
        assert all(p[0] == tokenizer.bos_token_id for p in prompts)
    # labels: -100 on every prompt position and on padding, the code's tokens (EOS included) elsewhere
    assert batch["labels"].shape == batch["input_ids"].shape
    for row, (prompt, inputs) in enumerate(zip(prompts, enc.source_ids)):
        assert (batch["labels"][row, : len(prompt)] == IGNORE_INDEX).all()
        assert (batch["labels"][row, len(inputs):] == IGNORE_INDEX).all() and (batch["attention_mask"][row, len(inputs):] == 0).all()
    # the model's loss equals a hand-computed cross-entropy over the code tokens only
    with torch.no_grad():
        out = model(**batch)
    total, count = 0.0, 0
    for row, (prompt, inputs) in enumerate(zip(prompts, enc.source_ids)):
        logits = out.logits[row, len(prompt) - 1 : len(inputs) - 1]  # position t predicts token t + 1
        targets = torch.tensor(inputs[len(prompt):])
        total += torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum").item()
        count += len(targets)
    assert out.loss.item() == pytest.approx(total / count, rel=1e-5)


def test_cut_code_gets_no_eos_and_cut_description_is_counted(family):
    _, tokenizer = make_causal(family)
    enc = encode_pairs(tokenizer, [DESCRIPTIONS[2] * 5, DESCRIPTIONS[1]], [CODES[2] * 5, CODES[1]], 20, 12)
    assert (enc.truncated_sources, enc.truncated_targets) == (1, 1)
    code = [t for t in enc.target_ids[0] if t != IGNORE_INDEX]
    assert len(code) == 12 and code[-1] != tokenizer.eos_token_id
    assert enc.target_ids[1][-1] == tokenizer.eos_token_id


def test_chat_template_wraps_the_prompt():
    _, tokenizer = make_causal("qwen2")
    configure_tokenizer(tokenizer, "Write: {description}", chat=True)
    text = prompt_format(tokenizer).render(tokenizer, "sum two numbers")
    assert text == "<|im_start|>user\nWrite: sum two numbers<|im_end|>\n<|im_start|>assistant\n"
    _, gpt2 = make_causal("gpt2")
    with pytest.raises(ConfigError, match="no chat template"):
        configure_tokenizer(gpt2, chat=True)


# ---------------------------------------------------------------- generation


def test_left_padded_batched_generation_equals_one_by_one(family):
    model, tokenizer = make_causal(family)
    batched = generate_with_flags(model, tokenizer, DESCRIPTIONS, 32, EVAL, CPU, progress=False)
    single = [generate_with_flags(model, tokenizer, [d], 32, EVAL, CPU, progress=False)[0] for d in DESCRIPTIONS]
    assert batched == single
    assert len({text for text, _ in batched}) > 1  # outputs depend on the prompt: the comparison bites
    # only the new tokens are decoded: no output repeats its prompt
    assert not any(text.startswith("Description:") for text, _ in batched)
    assert generate_codes(model, tokenizer, DESCRIPTIONS, 32, EVAL, CPU, progress=False) == [t for t, _ in batched]


def test_truncated_flag_and_stop_at_eos(family):
    model, tokenizer = make_causal(family)
    bias = torch.zeros(model.config.vocab_size)
    handle = model.get_output_embeddings().register_forward_hook(lambda m, a, out: out + bias)
    bias[tokenizer.eos_token_id] = 1e4  # EOS first: every output is empty and ended, not truncated
    assert generate_with_flags(model, tokenizer, DESCRIPTIONS, 32, EVAL, CPU, progress=False) == [("", False)] * 3
    bias[tokenizer.eos_token_id] = -1e4  # never EOS: every output runs to the budget
    outputs = generate_with_flags(model, tokenizer, DESCRIPTIONS, 32, EVAL, CPU, progress=False)
    handle.remove()
    assert all(flag and text for text, flag in outputs)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_tokenizer_without_pad_token_pads_with_eos(family, tmp_path):
    raw = make_tokenizer(family)
    assert raw.pad_token_id is None
    from codecl.model.base import load_pretrained

    model, tokenizer = load_pretrained(str(save_causal(family, tmp_path / family)))
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    _, batch = _batch(tokenizer)  # rows of different lengths: padding is needed
    assert (batch["attention_mask"] == 0).any()
    assert torch.isfinite(model(**batch).loss)
    assert len(generate_codes(model, tokenizer, DESCRIPTIONS, 32, EVAL, CPU, progress=False)) == 3


# ---------------------------------------------------------------- the inserted decoder layer


@pytest.mark.parametrize("position", [1, -1])
def test_identity_inserted_layer_leaves_logits_and_greedy_output_unchanged(family, position):
    model, tokenizer = make_causal(family)
    _, batch = _batch(tokenizer)
    with torch.no_grad():
        before = model(**batch).logits
    greedy = generate_codes(model, tokenizer, DESCRIPTIONS, 32, EVAL, CPU, progress=False)
    cfg = BlockConfig(stack="auto", position=position)
    slot = make_slot(model, cfg)
    slot.block = make_block(model, cfg).eval()
    with torch.no_grad():
        after = model(**batch).logits
    assert torch.allclose(before, after, atol=1e-5)
    assert generate_codes(model, tokenizer, DESCRIPTIONS, 32, EVAL, CPU, progress=False) == greedy
    # the zeroed projections are the residual branches' outputs (weights and biases)
    outputs = {n: p for n, p in slot.block.named_parameters() if any(k in n for k in ("o_proj", "down_proj", "c_proj"))}
    assert len(outputs) >= 2 and all(p.abs().sum() == 0 for p in outputs.values())
    assert all(p.abs().sum() > 0 for n, p in slot.block.named_parameters() if n not in outputs and p.dim() == 2)
    if family in ("gpt2", "starcoder2"):
        assert any(n.endswith("bias") for n in outputs)  # biases on the residual branch: zeroed as well


def test_cached_equals_uncached_with_a_non_identity_layer_in_its_own_cache_slot(family):
    model, tokenizer = make_causal(family)
    _, batch = _batch(tokenizer)
    with torch.no_grad():
        before = model(**batch).logits
    cfg = BlockConfig(stack="decoder", position=2, init="copy")
    slot = make_slot(model, cfg)
    slot.block = make_block(model, cfg).eval()
    n = len(decoder_layers(model))
    assert cache_index(slot.block) == n  # a slot after the base's layers
    with torch.no_grad():
        assert not torch.allclose(model(**batch).logits, before, atol=1e-3)  # the layer does something
    ids = torch.tensor([encode_pairs(tokenizer, DESCRIPTIONS[:1], CODES[:1], 32, 64).source_ids[0][:12]])
    kw = dict(max_new_tokens=8, do_sample=False, output_scores=True, return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id)
    cached = model.generate(ids, attention_mask=torch.ones_like(ids), use_cache=True, **kw)
    uncached = model.generate(ids, attention_mask=torch.ones_like(ids), use_cache=False, **kw)
    assert torch.equal(cached.sequences, uncached.sequences)
    assert torch.allclose(torch.stack(cached.scores), torch.stack(uncached.scores), atol=1e-4)
    cache = getattr(cached, "cache", None) or cached.past_key_values  # transformers 5 / 4.x name
    assert len(cache.layers) == n + 1 and cache.layers[n].keys.shape[-2] == ids.shape[1] + 7


def test_encoder_stack_on_a_decoder_only_model_is_a_config_error():
    model, _ = make_causal("llama")
    with pytest.raises(ConfigError, match="decoder-only.*method.block.stack=decoder"):
        make_slot(model, BlockConfig(stack="encoder"))
    with pytest.raises(ConfigError, match="layers 1..3"):
        make_slot(model, BlockConfig(stack="decoder", position=4))


def test_float32_layer_trains_inside_a_bfloat16_base(family):
    model, tokenizer = make_causal(family)
    model.to(torch.bfloat16)
    _, batch = _batch(tokenizer)
    cfg = BlockConfig(stack="auto", position=2, init="copy")
    slot = make_slot(model, cfg)
    slot.block = make_block(model, cfg).train()
    assert next(slot.block.parameters()).dtype == torch.float32
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None and torch.isfinite(p.grad).all() for p in slot.block.parameters())


def test_gradient_checkpointing_gives_the_same_gradients(family):
    grads = {}
    for checkpointing in (False, True):
        model, tokenizer = make_causal(family)
        if checkpointing:
            enable_gradient_checkpointing(model)
        model.train()
        _, batch = _batch(tokenizer)
        cfg = BlockConfig(stack="auto", position=1, init="copy")
        slot = make_slot(model, cfg)
        torch.manual_seed(0)
        slot.block = make_block(model, cfg).train()
        model(**batch).loss.backward()
        grads[checkpointing] = [p.grad.clone() for p in slot.block.parameters()]
        if checkpointing:
            assert slot.block.gradient_checkpointing  # checkpointed as the layer below it is
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[False], grads[True]))
