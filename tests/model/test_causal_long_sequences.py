"""Long sequences on decoder-only bases: 2048-token training examples with gradient checkpointing.

`train.gradient_checkpointing` (`codecl.model.base.enable_gradient_checkpointing`, applied by
`load_base`) recomputes every decoder layer in the backward pass, the inserted layer with it. On a
tiny Llama (2 layers, an inserted layer and LoRA, both moved off their identity init) one
2048-token example (prompt masked) gives the same loss and gradients with and without it — in
float32, and with a bfloat16 base under bfloat16 autocast (`model.frozen_dtype`,
`train.mixed_precision`) — and checkpointing really recomputes (every layer's MLP runs twice per
step). The sequence length is set by `data.max_source_tokens` and `data.max_target_tokens` (up to
4096 each); a base whose `max_position_embeddings` cannot hold them is a ConfigError naming them.
"""
from collections import Counter

import pytest
import torch

from causal_models import make_causal, save_causal
from codecl.config import BlockConfig, LoraConfig, MethodConfig, load_config
from codecl.data.batching import IGNORE_INDEX, encode_pairs, pad_batch
from codecl.errors import ConfigError
from codecl.methods.build import build_model
from codecl.model.base import BaseInfo, count_parameters, enable_gradient_checkpointing, fingerprint, load_base
from codecl.model.causal import decoder_layers, prompt_format

LENGTH = 2048
METHOD = MethodConfig(lora=LoraConfig(rank=4, alpha=8, dropout=0.0), block=BlockConfig(stack="auto", position=1, init="identity"))
DESCRIPTION = " ".join(["Sort the list in place."] * 40)
CODE = "for (let i = 0; i < n; i++) { total += xs[i]; }\n" * 300


def long_example(tokenizer):
    """One (prompt + code) sequence of exactly LENGTH tokens, the code cut to fill it."""
    prompt = prompt_format(tokenizer).prompt_ids(tokenizer, [DESCRIPTION], 1024)[0][0]
    enc = encode_pairs(tokenizer, [DESCRIPTION], [CODE], 1024, LENGTH - len(prompt))
    assert (enc.truncated_sources, enc.truncated_targets) == (0, 1)
    (inputs,), (labels,) = enc.source_ids, enc.target_ids
    assert len(inputs) == LENGTH and 200 < len(prompt) < 1000
    assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt) and IGNORE_INDEX not in labels[len(prompt):]
    return pad_batch(enc.source_ids, enc.target_ids, tokenizer.pad_token_id)


def one_step(checkpointing: bool, bf16: bool):
    """(loss, {trainable parameter: gradient}, forward calls per MLP) of one training step."""
    model, tokenizer = make_causal("llama", num_hidden_layers=2, max_position_embeddings=LENGTH)
    if bf16:
        model.to(torch.bfloat16)  # model.frozen_dtype=bfloat16: the inserted layer and LoRA stay float32
    if checkpointing:
        enable_gradient_checkpointing(model)  # what load_base does for train.gradient_checkpointing
    info = BaseInfo("llama", "llama", fingerprint(model, "llama"), count_parameters(model))
    cm = build_model(model, "hybrid", METHOD, info)
    torch.manual_seed(0)
    cm.add_task("python")
    cm.activate("python")
    torch.manual_seed(1)
    with torch.no_grad():  # off the identity init: the inserted layer's zeroed projections, LoRA's zero B
        for _, p in cm.task_parameters("python"):
            p.add_(torch.randn_like(p) * 0.05)
    cm.train()
    calls = Counter()
    mlps = {"inserted": cm.slot.block.mlp, **{f"layer {i}": layer.mlp for i, layer in enumerate(decoder_layers(model))}}
    for name, mlp in mlps.items():  # a pre-hook: a recomputation may stop early, inside the MLP
        mlp.register_forward_pre_hook(lambda *_, name=name: calls.update([name]))
    batch = long_example(tokenizer)
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False):
        loss = cm(**batch).loss  # train.mixed_precision=bf16: the forward under autocast
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in cm.task_parameters("python")}
    return loss.item(), grads, calls


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bfloat16"])
def test_2048_tokens_with_gradient_checkpointing_give_the_same_loss_and_gradients(bf16):
    plain_loss, plain, plain_calls = one_step(False, bf16)
    ckpt_loss, ckpt, ckpt_calls = one_step(True, bf16)
    # checkpointing is really on: every layer (the inserted one too) runs again in the backward pass
    assert plain_calls == {"inserted": 1, "layer 0": 1, "layer 1": 1}
    assert ckpt_calls == {"inserted": 2, "layer 0": 2, "layer 1": 2}
    assert ckpt_loss == pytest.approx(plain_loss, rel=1e-5)
    assert plain.keys() == ckpt.keys()
    assert any(n.startswith("blocks.") for n in plain) and any("lora_B" in n for n in plain)
    for name, grad in plain.items():
        assert grad.norm() > 0, name
        assert (ckpt[name] - grad).norm() <= 1e-5 * grad.norm(), name


@pytest.mark.parametrize("limit", [2048, 4096])
def test_config_accepts_long_token_limits(limit):
    cfg = load_config("qwen-coder", overrides=[f"data.max_source_tokens={limit}", f"data.max_target_tokens={limit}",
                                               f"eval.max_new_tokens={limit}", "train.gradient_checkpointing=true"])
    assert (cfg.data.max_source_tokens, cfg.data.max_target_tokens, cfg.eval.max_new_tokens) == (limit, limit, limit)
    assert cfg.train.gradient_checkpointing and cfg.train.mixed_precision == "bf16" and cfg.model.frozen_dtype == "bfloat16"


def test_token_limits_beyond_the_base_positions_are_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    short = save_causal("llama", tmp_path / "llama-256")  # max_position_embeddings=256
    fits = load_config("smoke", overrides=[f"model.name={short}"])  # 32-token descriptions, 64-token code
    assert load_base(fits.model, fits, progress=False)[0].config.max_position_embeddings == 256
    long_code = load_config("smoke", overrides=[f"model.name={short}", f"data.max_target_tokens={LENGTH}"])
    with pytest.raises(ConfigError, match=r"training sequence can reach \d+ tokens .*data\.max_target_tokens=2048.*"
                                          r"max_position_embeddings=256; lower data\.max_source_tokens or data\.max_target_tokens"):
        load_base(long_code.model, long_code, progress=False)
    long_generation = load_config("smoke", overrides=[f"model.name={short}", "eval.max_new_tokens=300"])
    with pytest.raises(ConfigError, match=r"generation can reach .*eval\.max_new_tokens=300.*max_position_embeddings=256"):
        load_base(long_generation.model, long_generation, progress=False)
    # GPT-2's learned positions (n_positions) are checked alike
    gpt2 = save_causal("gpt2", tmp_path / "gpt2-256")
    gpt2_cfg = load_config("smoke", overrides=[f"model.name={gpt2}", f"data.max_target_tokens={LENGTH}"])
    with pytest.raises(ConfigError, match="max_position_embeddings=256"):
        load_base(gpt2_cfg.model, gpt2_cfg, progress=False)
    # a base with the positions for it loads
    wide = save_causal("llama", tmp_path / "llama-4096", max_position_embeddings=2 * LENGTH)
    cfg = load_config("smoke", overrides=[f"model.name={wide}", f"data.max_target_tokens={LENGTH}", f"data.max_source_tokens={LENGTH - 128}",
                                          "train.gradient_checkpointing=true"])
    base = load_base(cfg.model, cfg, progress=False)[0]
    assert all(layer.gradient_checkpointing for layer in decoder_layers(base))
