"""Every method and baseline on decoder-only bases (issue 16): tiny random Llama, Qwen2, GPT-2, StarCoder2.

One parametrized set of checks per family: new modules start as the identity, switching tasks
changes outputs, save/load reproduces outputs bit for bit, LoRA goes on every attention and MLP
projection of the family (PEFT format), the baselines train, save and reload, and `codecl params`
counts are exact (Qwen2.5-Coder-0.5B's configuration on the meta device, by hand arithmetic).
"""
import json

import pytest
import torch

from causal_models import FAMILIES, make_causal
from codecl.config import BlockConfig, EvalConfig, LoraConfig, MethodConfig, TrainConfig, load_config
from codecl.data.batching import encode_pairs, pad_batch
from codecl.errors import ConfigError
from codecl.evaluation.generate import generate_codes
from codecl.methods.build import build_model
from codecl.model.base import BaseInfo, count_parameters, enable_gradient_checkpointing, fingerprint
from codecl.train import train_task

SMALL = MethodConfig(lora=LoraConfig(rank=4, alpha=8, dropout=0.0), block=BlockConfig(stack="auto", position=-1))
TRAIN = TrainConfig(lr=1e-2, batch_size=2, epochs=1, checkpoint_every_steps=0, fast_dropout=False)
CPU = torch.device("cpu")
EVAL = EvalConfig(max_new_tokens=6, batch_size=4)
DESCRIPTIONS = ["Return the sum of two numbers.", "Sort the list in place.", "Parse a URL.", "Push an item."]
CODES = ["def add(a, b):\n    return a + b", "xs.sort()", "function parse(url) {\n  return new URL(url);\n}", "self.items.append(item)"]
FAMILY_TARGETS = {
    "llama": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "qwen2": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "gpt2": {"c_attn", "c_proj", "c_fc"},
    "starcoder2": {"q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"},
}


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


def make(family: str, method: str, cfg: MethodConfig = SMALL):
    model, tokenizer = make_causal(family)
    info = BaseInfo(family, family, fingerprint(model, family), count_parameters(model))
    return build_model(model, method, cfg, info), tokenizer


def batch_of(tokenizer):
    enc = encode_pairs(tokenizer, DESCRIPTIONS, CODES, 32, 64)
    return enc, pad_batch(enc.source_ids, enc.target_ids, tokenizer.pad_token_id)


def logits(cm, batch):
    with torch.no_grad():
        return cm(**batch).logits


def perturb(cm, task):
    """Stand-in for training: move the task's parameters away from their (identity) init."""
    torch.manual_seed(len(task))
    with torch.no_grad():
        for _, p in cm.task_parameters(task):
            p.add_(torch.randn_like(p) * 0.05)


@pytest.mark.parametrize("method", ["lora", "full_layer", "hybrid", "hybrid_shared"])
def test_methods_start_as_identity_switch_and_reload_bit_for_bit(family, method, tmp_path):
    cm, tokenizer = make(family, method)
    _, batch = batch_of(tokenizer)
    base_logits = logits(cm, batch)
    for task in ("python", "javascript"):
        cm.add_task(task)
        cm.activate(task)
        expected = base_logits
        if method == "hybrid_shared" and task != "python":  # the shared block as the first task left it
            with cm.peft.disable_adapter():
                expected = logits(cm, batch)
        assert torch.allclose(logits(cm, batch), expected, atol=1e-5)
        perturb(cm, task)
        cm.save_task(task, tmp_path / task)
    cm.activate("python")
    py, py_code = logits(cm, batch), generate_codes(cm, tokenizer, DESCRIPTIONS, 32, EVAL, CPU, progress=False)
    cm.activate("javascript")
    js, js_code = logits(cm, batch), generate_codes(cm, tokenizer, DESCRIPTIONS, 32, EVAL, CPU, progress=False)
    assert not torch.allclose(py, js)  # switching tasks changes outputs
    fresh, _ = make(family, method)
    fresh.load_stages(tmp_path, ["python", "javascript"])
    fresh.activate("javascript")
    assert torch.equal(logits(fresh, batch), js)
    assert generate_codes(fresh, tokenizer, DESCRIPTIONS, 32, EVAL, CPU, progress=False) == js_code
    if method != "hybrid_shared":  # a shared block ends as the last stage left it; per-task modules come back as saved
        fresh.activate("python")
        assert torch.equal(logits(fresh, batch), py)
        assert generate_codes(fresh, tokenizer, DESCRIPTIONS, 32, EVAL, CPU, progress=False) == py_code
    if cm.slot is not None:
        assert json.loads((tmp_path / "python" / "block.json").read_text())["stack"] == "decoder"


def test_lora_targets_every_projection_of_the_family_in_peft_format(family, tmp_path):
    from peft import PeftModel

    cm, tokenizer = make(family, "lora")
    cm.add_task("python")
    cm.activate("python")
    perturb(cm, "python")
    wrapped = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in cm.peft.named_parameters() if "lora_A" in n}
    assert wrapped == FAMILY_TARGETS[family]
    cm.save_task("python", tmp_path / "python")
    saved = json.loads((tmp_path / "python" / "adapter_config.json").read_text())
    assert set(saved["target_modules"]) == FAMILY_TARGETS[family] and saved["task_type"] == "CAUSAL_LM"
    assert saved["fan_in_fan_out"] == (family == "gpt2")  # GPT-2's Conv1D stores weights as (in, out)
    _, batch = batch_of(tokenizer)
    plain, _ = make_causal(family)
    peft = PeftModel.from_pretrained(plain, str(tmp_path / "python")).eval()
    with torch.no_grad():
        assert torch.allclose(peft(**batch).logits, logits(cm, batch), atol=1e-6)


def test_configured_targets_that_match_nothing_say_the_family_default():
    cfg = MethodConfig(lora=LoraConfig(rank=4, alpha=8, target_modules=("q", "k", "v", "o", "wi", "wo")))
    cm, _ = make("llama", "lora", cfg)
    with pytest.raises(ConfigError, match=r"no linear layer of LlamaForCausalLM.*q_proj.*target_modules=\[\]"):
        cm.add_task("python")


@pytest.mark.parametrize("method", ["sequential_ft", "joint", "replay", "ewc", "olora"])
def test_baselines_train_save_and_reload(family, method, tmp_path):
    cm, tokenizer = make(family, method)
    enc, batch = batch_of(tokenizer)
    data = {"python": enc, "javascript": encode_pairs(tokenizer, DESCRIPTIONS[::-1], CODES[::-1], 32, 64)}
    before = logits(cm, batch)
    stages = cm.stages(["python", "javascript"])
    for index, stage in enumerate(stages):
        cm.add_task(stage.name)
        cm.activate(stage.name)
        cost = train_task(cm, cm.training_data(stage, data, 0), TRAIN, tokenizer.pad_token_id, CPU, index, progress=False,
                          regularizer=cm.regularizer())
        assert cost.steps >= 2 and cost.skipped_nonfinite_steps == 0
        cm.save_task(stage.name, tmp_path / stage.name)
        cm.end_stage(stage, data, tokenizer.pad_token_id, CPU, index, 2)
    cm.activate(stages[-1].name)
    after = logits(cm, batch)
    assert not torch.allclose(before, after)  # it trained
    fresh, _ = make(family, method)
    fresh.load_stages(tmp_path, [s.name for s in stages])
    fresh.activate(stages[-1].name)
    assert torch.equal(logits(fresh, batch), after)


def test_hybrid_trains_the_same_with_gradient_checkpointing(family):
    """train.gradient_checkpointing: LoRA and the inserted layer (behind a hook) get the same updates."""
    weights = {}
    for checkpointing in (False, True):
        cm, tokenizer = make(family, "hybrid")
        if checkpointing:
            enable_gradient_checkpointing(cm.base)
        enc, _ = batch_of(tokenizer)
        torch.manual_seed(0)
        cm.add_task("python")
        cm.activate("python")
        train_task(cm, enc, TRAIN, tokenizer.pad_token_id, CPU, 0, progress=False)
        weights[checkpointing] = [p.detach().clone() for _, p in cm.task_parameters("python")]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(weights[False], weights[True]))


# ---------------------------------------------------------------- parameter accounting


def _qwen_config_folder(path):
    """Qwen/Qwen2.5-Coder-0.5B's configuration (config.json only, no weights)."""
    from transformers import Qwen2Config

    Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                vocab_size=151936, tie_word_embeddings=True, rope_theta=1000000.0, max_position_embeddings=32768,
                rms_norm_eps=1e-6).save_pretrained(path)
    return path


def test_params_of_qwen2_5_coder_0_5b_match_hand_arithmetic(tmp_path):
    from codecl.methods.accounting import parameter_report

    folder = _qwen_config_folder(tmp_path / "qwen")
    methods = ["lora", "full_layer", "hybrid", "hybrid_shared", "sequential_ft", "joint", "replay", "ewc", "olora"]
    cfg = load_config("qwen-coder", overrides=[f"model.name={folder}"], methods=methods)
    report = parameter_report(cfg)
    h, i, v, layers, kv = 896, 4864, 151936, 24, 2 * 64  # kv: 2 key/value heads of 896/14 = 64
    attention = (h * h + h) + 2 * (h * kv + kv) + h * h  # q, k, v with biases (Qwen2), o without
    mlp = 3 * h * i  # gate, up, down
    layer = attention + mlp + 2 * h  # + two RMSNorms
    base = v * h + layers * layer + h  # tied embedding counted once, final norm
    assert base == report["base"] == 494_032_768
    lora = 16 * layers * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + i) + (i + h))  # r (in + out) per projection
    assert (lora, layer) == (8_798_208, 14_912_384)
    m = report["methods"]
    assert m["lora"] == {"trainable_per_task": lora, "stored_after": {"1": lora, "2": 2 * lora}, "lora_rank": 16}
    assert m["full_layer"] == {"trainable_per_task": layer, "stored_after": {"1": layer, "2": 2 * layer}}
    assert m["hybrid"]["stored_after"] == {"1": lora + layer, "2": 2 * (lora + layer)}
    assert m["hybrid_shared"]["stored_after"] == {"1": lora + layer, "2": 2 * lora + layer}
    assert m["sequential_ft"]["stored_after"] == {"1": base, "2": base}
    assert m["joint"]["stored_after"] == {"2": lora} and m["replay"]["stored_after"]["2"] == m["ewc"]["stored_after"]["2"] == lora
    assert m["olora"]["stored_after"] == {"1": lora, "2": 2 * lora}


def test_params_of_tiny_families_match_hand_arithmetic(tmp_path):
    """Untied embeddings (Llama: counted twice), GQA, GPT-2's Conv1D (c_attn 32 -> 96) and biases."""
    from codecl.methods.accounting import parameter_report

    expected = {}
    for family in ("llama", "gpt2"):
        model, tokenizer = make_causal(family)
        model.config.save_pretrained(tmp_path / family)
        v, h = len(tokenizer), 32
        if family == "llama":  # q 32x32, k/v 32x16 (2 kv heads of 8), o 32x32, gate/up/down 32x64, 2 norms
            layer = 32 * 32 + 2 * 32 * 16 + 32 * 32 + 3 * 32 * 64 + 2 * h
            base = 2 * v * h + 3 * layer + h
            lora = 4 * 3 * ((h + h) + 2 * (h + 16) + (h + h) + 2 * (h + 64) + (64 + h))
        else:  # c_attn 32->96, attn.c_proj 32->32, c_fc 32->128, mlp.c_proj 128->32 (all with biases), 2 LayerNorms
            layer = (32 * 96 + 96) + (32 * 32 + 32) + (32 * 128 + 128) + (128 * 32 + 32) + 2 * 2 * h
            base = v * h + 256 * h + 3 * layer + 2 * h  # tied lm_head, learned positions, final LayerNorm
            lora = 4 * 3 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))
        assert count_parameters(model) == base
        expected[family] = (base, lora, layer)
        cfg = load_config("smoke", overrides=[f"model.name={tmp_path / family}"], methods=["lora", "full_layer"])
        report = parameter_report(cfg)
        assert (report["base"], report["methods"]["lora"]["trainable_per_task"], report["methods"]["full_layer"]["trainable_per_task"]) \
            == expected[family]


def test_params_of_the_quickstart_embedded_llama_match_hand_arithmetic():
    """The quickstart's embedded base is a decoder-only Llama (`model.embedded.kind: llama`): `codecl params`
    counts that model, not a T5 of the same shape."""
    from codecl.methods.accounting import parameter_report

    cfg = load_config("quickstart")
    shape = cfg.model.embedded
    assert shape.kind == "llama"
    h, ff, v, layers = shape.d_model, shape.d_ff, shape.vocab_size, 2 * shape.num_layers
    layer = 4 * h * h + 3 * h * ff + 2 * h  # q, k, v, o (no GQA); gate, up, down; two RMSNorms
    base = v * h + layers * layer + h  # tied embedding once, final norm
    lora = 16 * layers * (4 * (h + h) + 2 * (h + ff) + (ff + h))
    report = parameter_report(cfg)
    assert (report["base"], layer, lora) == (base, 262_400, 376_832) and base == 2_623_616
    assert report["methods"]["full_layer"]["trainable_per_task"] == layer
    assert report["methods"]["lora"]["trainable_per_task"] == lora
    assert report["methods"]["hybrid_shared"]["stored_after"] == {"1": lora + layer, "2": 2 * lora + layer}
