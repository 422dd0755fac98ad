"""train.base_dropout: the base's own dropout switched off for training, LoRA's dropout kept."""
import pytest
import torch

from codecl.config import LoraConfig, MethodConfig
from codecl.methods.continual import ContinualModel
from codecl.model.base import set_base_dropout
from helpers import make_base, tiny_config


def _model(lora_dropout: float):
    config = tiny_config()
    config.dropout_rate = 0.5
    base, info = make_base(config)
    cm = ContinualModel(base, "lora", MethodConfig(lora=LoraConfig(rank=4, alpha=8, dropout=lora_dropout)), info)
    cm.add_task("python")
    cm.activate("python")
    return cm


def _logits(cm, batch):
    return cm(**batch).logits


@pytest.fixture
def batch():
    ids = torch.randint(3, 90, (2, 7))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(3, 90, (2, 5))}


def test_base_dropout_off_makes_training_forward_deterministic(batch):
    cm = _model(lora_dropout=0.0)
    cm.train()
    torch.manual_seed(0)
    assert not torch.equal(_logits(cm, batch), _logits(cm, batch))  # T5's dropout (0.5) is on in train mode
    switched = set_base_dropout(cm.base, False)
    assert switched > 0
    train_out = _logits(cm, batch)
    assert torch.equal(train_out, _logits(cm, batch))
    cm.eval()
    assert torch.allclose(train_out, _logits(cm, batch))  # what is left equals the eval-mode model


def test_lora_dropout_is_kept(batch):
    cm = _model(lora_dropout=0.5)
    cm.train()
    set_base_dropout(cm.base, False)
    lora_dropouts = [m for n, m in cm.base.named_modules() if "lora_dropout" in n and isinstance(m, torch.nn.Dropout)]
    assert lora_dropouts and all(m.training for m in lora_dropouts)
    base_dropouts = [m for n, m in cm.base.named_modules() if "lora_dropout" not in n and isinstance(m, torch.nn.Dropout)]
    assert base_dropouts and not any(m.training for m in base_dropouts)


def test_train_task_honours_base_dropout(batch):
    from codecl.config import TrainConfig
    from codecl.data.batching import encode_pairs
    from codecl.train import train_task

    class Tok:
        eos_token_id = 1

        def __call__(self, texts, **_):
            return {"input_ids": [[3 + (ord(c) % 80) for c in t] + [1] for t in texts]}

    data = encode_pairs(Tok(), ["add two numbers", "sort a list"], ["return a + b", "return sorted(x)"], 16, 16)
    seen = []
    for flag in (True, False):
        cm = _model(lora_dropout=0.1)
        cm.base.register_forward_pre_hook(lambda module, args: seen.append(
            (flag, [m.training for n, m in module.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_dropout" not in n])))
        train_task(cm, data, TrainConfig(epochs=1, batch_size=2, base_dropout=flag, checkpoint_every_steps=0), 0, torch.device("cpu"), 0, progress=False)
    assert all(all(states) for flag, states in seen if flag)
    assert all(not any(states) for flag, states in seen if not flag) and any(not flag for flag, _ in seen)
