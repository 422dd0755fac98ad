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
    if getattr(model.config, "is_encoder_decoder", False):
        state = dict(model.named_parameters())
        tensors = [state[key] for key in _FINGERPRINT_TENSORS if key in state]
    else:  # a decoder-only LM: embedding, first/last decoder layer (codecl.model.causal)
        from codecl.model.causal import fingerprint_tensors

        tensors = fingerprint_tensors(model)
    for tensor in tensors:
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
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
        if getattr(module, "gradient_checkpointing", False) and model.training:
            continue  # a checkpointed layer checkpoints only in training mode; its dropouts are its submodules
        module.training = on
        switched += 1
    return switched


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """train.gradient_checkpointing: recompute every layer's activations in the backward pass
    (non-reentrant, so a frozen base with trainable adapters or inserted blocks needs no input grads)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def load_pretrained(name_or_path: str, frozen_dtype: str = "float32", revision: str | None = None):
    """Load a T5-family seq2seq model or a decoder-only causal LM (the kind read from its config) and
    its tokenizer from a folder or the hub (offline-aware); a causal LM's tokenizer gets a pad token
    and the default prompt format (`codecl.model.causal`).

    `revision` (model.revision) pins a hub id's commit/tag/branch for both; a local folder ignores it."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[frozen_dtype]
    is_local = Path(name_or_path).is_dir()
    pinned = {"revision": revision} if revision and not is_local else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **pinned)
        config = AutoConfig.from_pretrained(name_or_path, **pinned)
        auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        model = auto.from_pretrained(name_or_path, dtype=dtype, **pinned)
    except OSError as exc:
        if is_local:
            raise ConfigError(f"model.name={name_or_path}: not a folder saved with save_pretrained ({exc})") from exc
        raise ConfigError(
            f"model.name={name_or_path}: the weights cannot be had (no network or unknown id); "
            "use the embedded base (--set model.name=embedded, the quickstart default) or a local folder saved with save_pretrained"
        ) from exc
    if not getattr(model.config, "is_encoder_decoder", False):
        from codecl.model.causal import configure_tokenizer

        return model, configure_tokenizer(tokenizer)
    if not hasattr(model, "encoder"):
        raise ConfigError(f"model.name={name_or_path}: codecl needs a T5-family encoder-decoder or a causal LM, got {type(model).__name__}")
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
    model, tokenizer = load_pretrained(path, model_cfg.frozen_dtype, getattr(model_cfg, "revision", None))
    freeze(model).eval()
    if not getattr(model.config, "is_encoder_decoder", False):  # a decoder-only base: the configured prompt
        from codecl.model.causal import check_sequence_length, configure_tokenizer

        configure_tokenizer(tokenizer, model_cfg.prompt_template, model_cfg.chat_template)
        if run_cfg is not None:  # data.max_*_tokens and eval.max_new_tokens within the base's positions
            check_sequence_length(model, tokenizer, run_cfg, model_cfg.name)
    if run_cfg is not None and getattr(run_cfg.train, "gradient_checkpointing", False):
        enable_gradient_checkpointing(model)
    info = BaseInfo(model_cfg.name, path, fingerprint(model, model_cfg.name), count_parameters(model))
    return model, tokenizer, info
