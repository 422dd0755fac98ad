"""Inserting a new trainable transformer block into a frozen T5 stack.

The block runs right after layer `k` of the encoder or decoder, through a forward hook on
that layer. The base's module tree and parameter names stay untouched, so PEFT adapters
trained beside a block remain plain adapters for the base (`PeftModel.from_pretrained`).

Initialisation `identity` copies the layer below and zeroes its output projections
(attention `o`, feed-forward `wo`): each residual branch adds 0, so the model computes
exactly what the base computed, and training starts from there (LLaMA Pro, arXiv 2401.02415).
T5 details: the relative position bias lives in block 0 and is passed up the stack as an
output, so the inserted block reuses the bias its neighbour returned; an inserted decoder
block gets its own cache index after the base's layers.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from codecl.errors import ConfigError

INITS = ("identity", "copy", "random")


def _stack(model: nn.Module, stack: str) -> nn.Module:
    return model.encoder if stack == "encoder" else model.decoder


def neighbour_index(model: nn.Module, stack: str, position: int) -> int:
    """0-based index of the layer the block follows; `position` is 1-based, -1 = top."""
    num_layers = len(_stack(model, stack).block)
    if position == -1:
        return num_layers - 1
    if not 1 <= position <= num_layers:
        raise ConfigError(f"method.block.position={position}: the {stack} has layers 1..{num_layers} (or -1 for the top)")
    return position - 1


def new_block(model: nn.Module, stack: str, position: int, init: str, slot: int = 0) -> nn.Module:
    """A fresh float32 T5 block for `stack`, initialised from the layer at `position`."""
    from transformers.models.t5.modeling_t5 import T5Block

    if init not in INITS:
        raise ConfigError(f"method.block.init={init!r}: known inits are {', '.join(INITS)}")
    t5_stack = _stack(model, stack)
    neighbour = t5_stack.block[neighbour_index(model, stack, position)]
    config = copy.deepcopy(t5_stack.config)
    # A decoder block needs a cache slot of its own after the base's layers.
    layer_idx = len(t5_stack.block) + slot if stack == "decoder" else None
    block = T5Block(config, has_relative_attention_bias=False, layer_idx=layer_idx)
    if init in ("identity", "copy"):
        # The neighbour's own (frozen) weights: PEFT may have wrapped its linears (`base_layer`, `lora_*`).
        state = {k.replace(".base_layer", ""): v for k, v in neighbour.state_dict().items()
                 if "relative_attention_bias" not in k and "lora_" not in k}
        block.load_state_dict(state)
    else:
        block.apply(_t5_init(config))
    block.float()
    if init == "identity":
        with torch.no_grad():
            for layer in block.layer:
                for name in ("SelfAttention", "EncDecAttention"):
                    if hasattr(layer, name):
                        getattr(layer, name).o.weight.zero_()
                if hasattr(layer, "DenseReluDense"):
                    layer.DenseReluDense.wo.weight.zero_()
    return block


def _t5_init(config):
    """T5's own init scheme (T5PreTrainedModel._init_weights), for `random`."""
    factor = getattr(config, "initializer_factor", 1.0)

    def init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=factor * module.in_features ** -0.5)
        elif type(module).__name__ == "T5LayerNorm":
            module.weight.data.fill_(factor)

    return init


def _ensure_cache_slot(cache, layer_idx: int) -> None:
    """The cache was sized for the base's layers; give the inserted decoder block its own slot."""
    from transformers.cache_utils import DynamicLayer

    caches = [getattr(cache, "self_attention_cache", None), getattr(cache, "cross_attention_cache", None)]
    for sub in [c for c in caches if c is not None] or [cache]:
        while len(sub.layers) <= layer_idx:
            sub.layers.append(DynamicLayer())


class BlockSlot:
    """Runs `self.block` (or nothing) after one layer of a T5 stack, via a forward hook."""

    def __init__(self, model: nn.Module, stack: str, position: int):
        self.stack, self.position = stack, position
        self.block: nn.Module | None = None
        layer = _stack(model, stack).block[neighbour_index(model, stack, position)]
        self._handle = layer.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        if self.block is None:
            return None
        # T5Stack calls: (hidden, mask, position_bias, enc_hidden, enc_mask, enc_dec_position_bias, cache=...)
        full = list(args) + [None] * (6 - len(args))
        hidden, self_bias, cross_bias = output[0], output[1], output[2]
        extra = {k: v for k, v in kwargs.items() if k not in ("attention_mask", "position_bias", "encoder_decoder_position_bias")}
        if kwargs.get("cache") is not None and self.stack == "decoder":
            _ensure_cache_slot(kwargs["cache"], self.block.layer[0].SelfAttention.layer_idx)
        # A float32 block in a bfloat16 base (model.frozen_dtype): every float input in the block's dtype.
        dtype = next(self.block.parameters()).dtype
        cast = lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t  # noqa: E731
        new_hidden, _, _ = self.block(
            cast(hidden),
            cast(kwargs.get("attention_mask", full[1])),
            cast(self_bias),
            cast(kwargs.get("encoder_hidden_states", full[3])),
            cast(kwargs.get("encoder_attention_mask", full[4])),
            cast(cross_bias),
            **{k: v for k, v in extra.items() if k not in ("encoder_hidden_states", "encoder_attention_mask")},
        )
        return (new_hidden.to(output[0].dtype), self_bias, cross_bias)

    def remove(self) -> None:
        self._handle.remove()
