"""Inserting a new trainable transformer block into a frozen T5 stack.

The block runs right after layer `k` of the encoder or decoder, through a forward hook on
that layer. The base's module tree and parameter names stay untouched, so PEFT adapters
trained beside a block remain plain adapters for the base (`PeftModel.from_pretrained`).

Initialisation `identity` copies the layer below and zeroes its output projections
(attention `o`, feed-forward `wo`): each residual branch adds 0, so the model computes
exactly what the base computed, and training starts from there (LLaMA Pro, arXiv 2401.02415).
T5 details: the relative position bias lives in block 0 and is passed up the stack as an
output, so the inserted block reuses the bias its neighbour returned; an inserted decoder
block gets its own cache index after the base's layers. The hook speaks both T5Block
interfaces codecl supports: transformers 5's (`cache=`, three outputs) and 4.56-4.57's
(`past_key_values=`/`cache_position=`, two to five outputs); anything else is refused with a
clear error rather than misread.
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


# The keyword under which T5Stack hands a block the KV cache: `cache` (transformers 5),
# `past_key_values` (4.56-4.57), `past_key_value` (older 4.x).
_CACHE_KWARGS = ("cache", "past_key_values", "past_key_value")


def _ensure_cache_slot(cache, layer_idx: int) -> None:
    """The cache was sized for the base's layers; give the inserted decoder block its own slot.

    transformers >= 4.56 caches hold a list `layers` (pre-sized from the config, or grown lazily
    when `layer_class_to_replicate` is set); a cache without `layers` grows by itself on `update`."""
    caches = [getattr(cache, "self_attention_cache", None), getattr(cache, "cross_attention_cache", None)]
    for sub in [c for c in caches if c is not None] or [cache]:
        layers = getattr(sub, "layers", None)
        if not isinstance(layers, list):
            continue
        make = getattr(sub, "layer_class_to_replicate", None)
        if make is None:
            from transformers.cache_utils import DynamicLayer as make
        while len(layers) <= layer_idx:
            layers.append(make())


def _block_api() -> str:
    """`v5`: T5Block.forward(..., cache=...) returns (hidden, self_bias, cross_bias), always 3 items.
    `v4`: forward(..., past_key_values=..., output_attentions=..., cache_position=...) returns
    (hidden, self_bias[, self_weights][, cross_bias[, cross_weights]]) (transformers 4.56-4.57)."""
    import inspect

    from transformers.models.t5.modeling_t5 import T5Block

    return "v5" if "cache" in inspect.signature(T5Block.forward).parameters else "v4"


def _is_bias(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() == 4


class BlockSlot:
    """Runs `self.block` (or nothing) after one layer of a T5 stack, via a forward hook.

    The inserted block is called with the same keywords its neighbour got, so it answers in the
    same layout; the hook returns the neighbour's output with only the hidden states replaced
    (the position biases the stack passes up stay the neighbour's, whatever the layout)."""

    def __init__(self, model: nn.Module, stack: str, position: int):
        self.stack, self.position = stack, position
        self.block: nn.Module | None = None
        self._api = _block_api()
        layer = _stack(model, stack).block[neighbour_index(model, stack, position)]
        self._handle = layer.register_forward_hook(self._hook, with_kwargs=True)

    def _biases(self, output, kwargs, has_cross: bool):
        """(self-attention bias, cross-attention bias) out of the neighbour's output tuple."""
        import transformers

        n = len(output) if isinstance(output, tuple) else 0
        if self._api == "v5":
            expected, cross_at = 3, 2
        else:
            attn = 1 if kwargs.get("output_attentions") else 0
            expected = 2 + attn + ((1 + attn) if has_cross else 0)
            cross_at = 2 + attn
        if n != expected or not _is_bias(output[1]) or (has_cross and not _is_bias(output[cross_at])):
            raise RuntimeError(
                f"inserted {self.stack} block: T5Block returned {n} outputs "
                f"({', '.join(type(o).__name__ for o in output) if n else type(output).__name__}), "
                f"expected {expected} in transformers {self._api[1]}.x's layout; transformers {transformers.__version__} "
                "is not supported here (codecl needs transformers>=4.56,<6)")
        return output[1], (output[cross_at] if has_cross else None)

    def _hook(self, module, args, kwargs, output):
        if self.block is None:
            return None
        # T5Stack calls: (hidden, mask, position_bias, enc_hidden, enc_mask, enc_dec_position_bias, <cache>=..., ...)
        full = list(args) + [None] * (6 - len(args))
        enc_hidden = kwargs.get("encoder_hidden_states", full[3])
        has_cross = self.stack == "decoder" and enc_hidden is not None
        self_bias, cross_bias = self._biases(output, kwargs, has_cross)
        positional = ("hidden_states", "attention_mask", "position_bias", "encoder_hidden_states",
                      "encoder_attention_mask", "encoder_decoder_position_bias")
        extra = {k: v for k, v in kwargs.items() if k not in positional}
        if self.stack == "decoder":
            for key in _CACHE_KWARGS:
                if extra.get(key) is not None:
                    _ensure_cache_slot(extra[key], self.block.layer[0].SelfAttention.layer_idx)
        # A float32 block in a bfloat16 base (model.frozen_dtype): every float input in the block's dtype.
        dtype = next(self.block.parameters()).dtype
        cast = lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t  # noqa: E731
        result = self.block(
            cast(output[0]),
            cast(kwargs.get("attention_mask", full[1])),
            cast(self_bias),
            cast(enc_hidden),
            cast(kwargs.get("encoder_attention_mask", full[4])),
            cast(cross_bias),
            **extra,
        )
        return (result[0].to(output[0].dtype),) + tuple(output[1:])

    def remove(self) -> None:
        self._handle.remove()
