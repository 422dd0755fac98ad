"""The frozen base model: loading (hub id, local folder or the embedded default), freezing, fingerprint.

The fingerprint (name, config hash, sha256 over a few fixed tensors) is recorded with every
module trained on the base, so a module is never loaded onto a different base by mistake.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from codecl.errors import ConfigError

_FINGERPRINT_TENSORS = ("shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight", "decoder.final_layer_norm.weight")


@dataclass(frozen=True)
class BaseInfo:
    name: str
    """What the user named (hub id, folder or `embedded`)."""
    path: str
    """Where the weights were loaded from (folder or hub id), as PEFT's base_model_name_or_path."""
    fingerprint: str
    parameters: int

    def as_dict(self) -> dict:
        return {"name": self.name, "path": self.path, "fingerprint": self.fingerprint, "parameters": self.parameters}


def fingerprint(model: nn.Module, name: str) -> str:
    """sha256 of the architecture config and a few fixed tensors (in float32), shortened."""
    digest = hashlib.sha256()
    config = model.config.to_dict()
    for volatile in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures", "use_cache"):
        config.pop(volatile, None)
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    state = dict(model.named_parameters())
    for key in _FINGERPRINT_TENSORS:
        if key in state:
            digest.update(state[key].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def freeze(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def set_base_dropout(model: nn.Module, enabled: bool) -> int:
    """Switch the base's own dropout (T5's `dropout_rate`) on or off for training; PEFT's LoRA
    layers and their `lora_dropout` stay as they are. Returns how many modules were switched.

    T5 drops in `nn.Dropout` layers and, inside attention, by `module.training` of `T5Attention`,
    so every base module is switched on its own (not recursively into LoRA). With gradient
    checkpointing off nothing else in T5 reads `training`. On CPU the dropout masks of a
    codet5-small-shaped base take about a third of a LoRA step (bench/train_throughput.py)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    on, switched = enabled and model.training, 0
    for name, module in model.named_modules():
        if "lora_" in name or isinstance(module, BaseTunerLayer):
            continue
        module.training = on
        switched += 1
    return switched


def load_pretrained(name_or_path: str, frozen_dtype: str = "float32"):
    """Load a T5-family seq2seq model and its tokenizer from a folder or the hub (offline-aware)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[frozen_dtype]
    is_local = Path(name_or_path).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForSeq2SeqLM.from_pretrained(name_or_path, dtype=dtype)
    except OSError as exc:
        if is_local:
            raise ConfigError(f"model.name={name_or_path}: not a folder saved with save_pretrained ({exc})") from exc
        raise ConfigError(
            f"model.name={name_or_path}: the weights cannot be had (no network or unknown id); "
            "use the embedded base (--set model.name=embedded, the quickstart default) or a local folder saved with save_pretrained"
        ) from exc
    if not getattr(model.config, "is_encoder_decoder", False) or not hasattr(model, "encoder"):
        raise ConfigError(f"model.name={name_or_path}: codecl needs a T5-family encoder-decoder, got {type(model).__name__}")
    return model, tokenizer


def load_base(model_cfg, run_cfg=None, progress: bool = True):
    """Return (frozen model, tokenizer, BaseInfo) for `model.name`: embedded, folder or hub id."""
    if model_cfg.name == "embedded":
        from codecl.model.embedded import ensure_embedded_base

        path = str(ensure_embedded_base(run_cfg, progress=progress))
    else:
        path = model_cfg.name
    if not Path(path).is_dir() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConfigError(
            f"model.name={path}: HF_HUB_OFFLINE=1 and no local folder of that name; "
            "use the embedded base (--set model.name=embedded) or a folder saved with save_pretrained"
        )
    model, tokenizer = load_pretrained(path, model_cfg.frozen_dtype)
    freeze(model).eval()
    info = BaseInfo(model_cfg.name, path, fingerprint(model, model_cfg.name), count_parameters(model))
    return model, tokenizer, info
