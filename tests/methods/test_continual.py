"""The four methods through one interface: counts, switching, save/load, PEFT compatibility."""
import json

import pytest
import torch

from codecl.config import BlockConfig, LoraConfig, MethodConfig
from codecl.errors import AdapterMismatchError, CheckpointError, ConfigError
from codecl.methods.continual import ContinualModel
from codecl.registry import METHODS
from helpers import codet5_small_config, make_base, tiny_config

SMALL = MethodConfig(lora=LoraConfig(rank=4, alpha=8, dropout=0.0))


def test_registry_miss_lists_methods():
    with pytest.raises(ConfigError, match="Unknown method 'lroa'. Available: lora, full_layer, hybrid, hybrid_shared"):
        METHODS.get("lroa")


def test_codet5_small_parameter_accounting():
    expected_lora = 6 * (4 * 16 * 1024 + 2 * 16 * 2560) + 6 * (8 * 16 * 1024 + 2 * 16 * 2560)  # q,k,v,o (+cross), wi, wo
    stored = {}
    for method in ("lora", "full_layer", "hybrid", "hybrid_shared"):
        base, info = make_base(codet5_small_config())
        cm = ContinualModel(base, method, MethodConfig(), info)
        for task in ("python", "javascript"):
            cm.add_task(task)
            cm.activate(task)
            trained = sum(p.numel() for p in cm.trainable_parameters())
            assert trained == cm.task_parameter_count(task)
        stored[method] = (trained, cm.stored_parameter_count())
        if cm.peft is not None:  # LoRA never inside the inserted block, and `wi` is covered
            names = [n for n, _ in cm.peft.named_parameters() if "lora_A" in n]
            assert any(".wi.lora_A" in n for n in names) and not any("wi_0" in n for n in names)
    block = 3_146_752
    assert stored["lora"] == (expected_lora, 2 * expected_lora)
    assert stored["full_layer"] == (block, 2 * block)
    assert stored["hybrid"] == (expected_lora + block, 2 * (expected_lora + block))
    assert stored["hybrid_shared"] == (expected_lora + block, 2 * expected_lora + block)


def _logits(cm, x, y):
    with torch.no_grad():
        return cm(input_ids=x, labels=y).logits


def _perturb(cm, task):
    """Stand-in for training: move the task's parameters away from their (identity) init."""
    torch.manual_seed(len(task))
    with torch.no_grad():
        for _, p in cm.task_parameters(task):
            p.add_(torch.randn_like(p) * 0.05)


@pytest.mark.parametrize("method", ["lora", "full_layer", "hybrid", "hybrid_shared"])
def test_switching_save_load_roundtrip(method, tmp_path):
    base, info = make_base(tiny_config())
    cm = ContinualModel(base, method, SMALL, info)
    x, y = torch.randint(3, 90, (2, 7)), torch.randint(3, 90, (2, 5))
    cm.activate(None) if cm.tasks else None
    base_logits = _logits(cm, x, y)
    for task in ("python", "javascript"):
        cm.add_task(task)
        cm.activate(task)
        # New modules start as identity. hybrid_shared's second task adds only a LoRA adapter to the shared
        # block as the first task left it: the model then equals that block with every adapter switched off.
        expected = base_logits
        if method == "hybrid_shared" and task != "python":
            with cm.peft.disable_adapter():
                expected = _logits(cm, x, y)
            assert not torch.allclose(expected, base_logits, atol=1e-3)  # the shared block did move: the check bites
        assert torch.allclose(_logits(cm, x, y), expected, atol=1e-5)
        _perturb(cm, task)
        cm.save_task(task, tmp_path / task)
    cm.activate("python")
    py = _logits(cm, x, y)
    cm.activate("javascript")
    js = _logits(cm, x, y)
    assert not torch.allclose(py, js)
    cm.activate(None)
    assert torch.allclose(_logits(cm, x, y), base_logits, atol=1e-6)

    fresh_base, _ = make_base(tiny_config())
    loaded = ContinualModel(fresh_base, method, SMALL, info)
    for task in ("python", "javascript"):
        loaded.load_task(task, tmp_path / task)
    loaded.activate("javascript")
    assert torch.equal(_logits(loaded, x, y), js)
    if method != "hybrid_shared":  # the shared block moved on after python's stage
        loaded.activate("python")
        assert torch.equal(_logits(loaded, x, y), py)


def test_only_active_task_trains():
    base, info = make_base(tiny_config())
    cm = ContinualModel(base, "hybrid", SMALL, info)
    cm.add_task("python")
    cm.add_task("javascript")
    cm.activate("javascript")
    trainable = {id(p) for p in cm.trainable_parameters()}
    assert trainable == {id(p) for _, p in cm.task_parameters("javascript")}
    assert not trainable & {id(p) for _, p in cm.task_parameters("python")}
    assert not any(p.requires_grad for p in base.parameters() if not any(p is q for q in cm.trainable_parameters()))


def test_saved_adapter_loads_with_plain_peft(tmp_path):
    from peft import PeftModel

    base, info = make_base(tiny_config())
    cm = ContinualModel(base, "lora", SMALL, info)
    cm.add_task("python")
    cm.activate("python")
    _perturb(cm, "python")
    cm.save_task("python", tmp_path / "python")
    x, y = torch.randint(3, 90, (2, 7)), torch.randint(3, 90, (2, 5))
    expected = _logits(cm, x, y)
    plain_base, _ = make_base(tiny_config())
    peft_model = PeftModel.from_pretrained(plain_base, tmp_path / "python").eval()
    assert json.loads((tmp_path / "python" / "adapter_config.json").read_text())["r"] == 4
    with torch.no_grad():
        assert torch.allclose(peft_model(input_ids=x, labels=y).logits, expected, atol=1e-6)


def test_loading_onto_another_base_is_refused(tmp_path):
    base, info = make_base(tiny_config(), seed=0)
    cm = ContinualModel(base, "full_layer", SMALL, info)
    cm.add_task("python")
    cm.save_task("python", tmp_path / "python")
    other, other_info = make_base(tiny_config(), seed=1)
    with pytest.raises(AdapterMismatchError, match="fingerprint"):
        ContinualModel(other, "full_layer", SMALL, other_info).load_task("python", tmp_path / "python")
    (tmp_path / "python" / "block.safetensors").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="block.safetensors: sha256 differs"):
        ContinualModel(base, "full_layer", SMALL, info).load_task("python", tmp_path / "python")


def test_decoder_block_method_generates():
    base, info = make_base(tiny_config())
    cfg = MethodConfig(lora=LoraConfig(rank=4, alpha=8), block=BlockConfig(stack="decoder", position=2))
    cm = ContinualModel(base, "hybrid", cfg, info)
    cm.add_task("python")
    cm.activate("python")
    _perturb(cm, "python")
    x = torch.randint(3, 90, (2, 7))
    a = cm.generate(input_ids=x, max_new_tokens=6, do_sample=False, use_cache=True)
    b = cm.generate(input_ids=x, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(a, b)
