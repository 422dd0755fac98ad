"""FastDropout: nn.Dropout's semantics with cheaper masks on CPU."""
import pytest
import torch
from torch import nn

from codecl.config import LoraConfig, MethodConfig
from codecl.methods.continual import ContinualModel
from codecl.model.dropout import FastDropout, fast_dropout, use_fast_dropout
from helpers import make_base, tiny_config


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_rate_and_scale_match_nn_dropout(p):
    torch.manual_seed(0)
    x = torch.ones(1_000_000)
    y = fast_dropout(x, p)
    kept = y != 0
    # binomial standard deviation of the kept share is < 5e-4 here; 3e-3 leaves room only for a wrong p
    assert abs(kept.float().mean().item() - (1 - p)) < 3e-3
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    assert abs(y.mean().item() - 1.0) < 1e-2  # unbiased, as nn.Dropout


def test_masks_follow_the_seed_and_differ_between_calls():
    x = torch.randn(64, 33)  # an odd element count: two 16-bit samples per 32-bit word, one left over
    torch.manual_seed(3)
    a, b = fast_dropout(x, 0.3), fast_dropout(x, 0.3)
    torch.manual_seed(3)
    assert torch.equal(a, fast_dropout(x, 0.3)) and not torch.equal(a, b)


def test_gradient_is_mask_times_scale():
    x = torch.randn(50, 40, requires_grad=True)
    y = fast_dropout(x, 0.25)
    y.sum().backward()
    expected = (y.detach() != 0).float() / 0.75
    assert torch.allclose(x.grad, expected)


def test_edge_probabilities_and_eval_mode():
    x = torch.randn(10, 10)
    assert torch.equal(fast_dropout(x, 0.0), x) and torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))
    layer = FastDropout(0.5).eval()
    assert torch.equal(layer(x), x)


def test_use_fast_dropout_switches_base_and_lora_dropouts_in_place():
    config = tiny_config()
    config.dropout_rate = 0.1
    base, info = make_base(config)
    cm = ContinualModel(base, "hybrid", MethodConfig(lora=LoraConfig(rank=4, alpha=8, dropout=0.1)), info)
    cm.add_task("python")
    before = [(n, m.p) for n, m in cm.named_modules() if isinstance(m, nn.Dropout)]
    assert any("lora_dropout" in n for n, _ in before) and any(n.startswith("blocks.") for n, _ in before)
    assert use_fast_dropout(cm) == len(before)
    after = [(n, m.p) for n, m in cm.named_modules() if isinstance(m, nn.Dropout)]
    assert after == before  # same tree, same p
    assert all(type(m) is FastDropout for n, m in cm.named_modules() if isinstance(m, nn.Dropout))
    assert use_fast_dropout(cm) == 0  # idempotent


def test_train_task_uses_fast_dropout_only_when_asked():
    from codecl.config import TrainConfig
    from codecl.data.batching import encode_pairs
    from codecl.train import train_task

    class Tok:
        eos_token_id = 1

        def __call__(self, texts, **_):
            return {"input_ids": [[3 + (ord(c) % 80) for c in t] + [1] for t in texts]}

    data = encode_pairs(Tok(), ["add two numbers", "sort a list"], ["return a + b", "return sorted(x)"], 16, 16)
    kinds = {}
    for flag in (True, False):
        base, info = make_base(tiny_config())
        cm = ContinualModel(base, "lora", MethodConfig(lora=LoraConfig(rank=4, alpha=8, dropout=0.1)), info)
        cm.add_task("python")
        cm.activate("python")
        train_task(cm, data, TrainConfig(epochs=1, batch_size=2, fast_dropout=flag, checkpoint_every_steps=0), 0, torch.device("cpu"), 0,
                   progress=False)
        kinds[flag] = {type(m) for m in cm.modules() if isinstance(m, nn.Dropout)}
    assert kinds[True] == {FastDropout} and kinds[False] == {nn.Dropout}

