"""An inserted decoder layer in a frozen causal LM (LLaMA Pro's block expansion, arXiv 2401.02415).

As for T5 (`codecl.model.blocks`), the new layer runs right after decoder layer `k`, through a
forward hook on that layer, so the base's module tree and parameter names stay untouched and
PEFT adapters trained beside it remain plain adapters of the base.

- The layer is a fresh instance of the base's own decoder-layer class, built from the base's
  config for index `k` (so per-layer settings — Qwen2's sliding/full attention type, GPT-2's
  `scale_attn_by_inverse_layer_idx` — are those of the layer below), in float32.
- `identity` copies the layer below and zeroes its output projections *and their biases*
  (Llama/Qwen2 `self_attn.o_proj`, `mlp.down_proj`; GPT-2 `attn.c_proj`, `mlp.c_proj`;
  StarCoder2 `self_attn.o_proj`, `mlp.c_proj`): both residual branches add exactly 0, so the
  model computes what the base computed until training moves them. `copy` keeps them,
  `random` uses the base's own initialisation.
- The hook calls the new layer exactly as the model called layer `k` — the same positional
  arguments and keywords (attention mask, position ids, rotary `position_embeddings`, cache,
  `use_cache`, …) — with layer `k`'s output as its hidden states.
- KV cache: the layer's attention gets its own `layer_idx` after the base's layers
  (`num_hidden_layers + slot`); the hook grows the model's cache (`DynamicCache`) to hold it,
  with a cache layer of the same kind as layer `k`'s (sliding window or full).
- Gradient checkpointing: the layer follows layer `k`'s setting (it is checkpointed when the
  base's layers are).
"""
from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from codecl.errors import ConfigError
from codecl.model.causal import decoder_layers, is_causal, text_config

INITS = ("identity", "copy", "random")
OUTPUT_PROJECTIONS = ("o_proj", "down_proj", "c_proj", "out_proj", "dense_4h_to_h", "fc2", "dense", "wo")
"""Last names of the linear layers whose output is added to the residual stream (attention and MLP)."""


def neighbour_index(model: nn.Module, position: int) -> int:
    """0-based index of the decoder layer the new one follows; `position` is 1-based, -1 = top."""
    n = len(decoder_layers(model))
    if position == -1:
        return n - 1
    if not 1 <= position <= n:
        raise ConfigError(f"method.block.position={position}: the decoder has layers 1..{n} (or -1 for the top)")
    return position - 1


def _construct(cls, config, index: int) -> nn.Module:
    for call in (lambda: cls(config, layer_idx=index), lambda: cls(config, index), lambda: cls(config)):
        try:
            return call()
        except TypeError:
            continue
    raise ConfigError(f"{cls.__name__}: cannot build a new decoder layer of this class from the model's config")


def _set_layer_idx(block: nn.Module, layer_idx: int) -> None:
    """Every submodule that indexes the cache (attention modules) uses the new slot."""
    for module in block.modules():
        if isinstance(getattr(module, "layer_idx", None), int):
            module.layer_idx = layer_idx


def cache_index(block: nn.Module) -> int | None:
    return next((m.layer_idx for m in block.modules() if isinstance(getattr(m, "layer_idx", None), int)), None)


def zero_output_projections(block: nn.Module) -> int:
    """Zero the weights and biases of the layer's residual-branch output projections; returns how many."""
    zeroed = 0
    with torch.no_grad():
        for name, module in block.named_modules():
            if name.rsplit(".", 1)[-1] in OUTPUT_PROJECTIONS and getattr(module, "weight", None) is not None:
                module.weight.zero_()
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
                zeroed += 1
    return zeroed


def new_decoder_layer(model: nn.Module, position: int, init: str, slot: int = 0) -> nn.Module:
    """A fresh float32 decoder layer of `model`'s own class, initialised from the layer at `position`."""
    if init not in INITS:
        raise ConfigError(f"method.block.init={init!r}: known inits are {', '.join(INITS)}")
    layers = decoder_layers(model)
    index = neighbour_index(model, position)
    neighbour = layers[index]
    meta = any(p.is_meta for p in neighbour.parameters())  # `codecl params` builds big bases on the meta device
    with torch.device("meta") if meta else contextlib.nullcontext():
        block = _construct(type(neighbour), copy.deepcopy(text_config(model)), index)
    _set_layer_idx(block, len(layers) + slot)
    if not meta and init in ("identity", "copy"):
        # The neighbour's own (frozen) weights: PEFT may have wrapped its linears (`base_layer`, `lora_*`).
        state = {k.replace(".base_layer", ""): v for k, v in neighbour.state_dict().items() if "lora_" not in k}
        block.load_state_dict(state)
    elif not meta:
        init_fn = getattr(model, "_init_weights", None)
        for module in block.modules():
            if init_fn is not None:
                init_fn(module)
    block.float()
    if init == "identity" and not meta and zero_output_projections(block) < 2:
        raise ConfigError(f"method.block.init=identity: no attention and MLP output projections ({', '.join(OUTPUT_PROJECTIONS)}) "
                          f"found in {type(block).__name__}; use method.block.init=copy or random")
    return block


def _ensure_cache_slot(cache, layer_idx: int, like: int) -> None:
    """The cache was sized for the base's layers; give the inserted layer its own slot, of the
    same kind (full or sliding-window) as the cache layer of the layer it follows."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    layers = getattr(cache, "layers", None)
    if layers is None:
        return
    while len(layers) <= layer_idx:
        model_layer = layers[like] if like < len(layers) else None
        if isinstance(model_layer, DynamicSlidingWindowLayer) and len(layers) == layer_idx:
            layers.append(DynamicSlidingWindowLayer(sliding_window=model_layer.sliding_window))
        else:
            layers.append(DynamicLayer())


def _cast(value, dtype: torch.dtype):
    """Floating tensors (also inside tuples, e.g. rotary (cos, sin)) in `dtype`; everything else as is."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, tuple):
        return tuple(_cast(v, dtype) for v in value)
    return value


class DecoderLayerSlot:
    """Runs `self.block` (or nothing) right after one decoder layer of a causal LM, via a forward hook."""

    stack = "decoder"

    def __init__(self, model: nn.Module, position: int):
        self.position = position
        self.index = neighbour_index(model, position)
        self.block: nn.Module | None = None
        self._handle = decoder_layers(model)[self.index].register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        if self.block is None:
            return None
        from transformers.cache_utils import Cache

        hidden = output[0] if isinstance(output, tuple) else output
        cache = next((v for v in list(args[1:]) + list(kwargs.values()) if isinstance(v, Cache)), None)
        layer_idx = cache_index(self.block)
        if cache is not None and layer_idx is not None:
            _ensure_cache_slot(cache, layer_idx, self.index)
        # Checkpointed as the layer below is (`gradient_checkpointing_enable` on the base).
        self.block.gradient_checkpointing = getattr(module, "gradient_checkpointing", False)
        if hasattr(module, "_gradient_checkpointing_func"):
            self.block._gradient_checkpointing_func = module._gradient_checkpointing_func
        # A float32 layer in a bfloat16 base (model.frozen_dtype): every float input in the layer's dtype.
        dtype = next(self.block.parameters()).dtype
        new = self.block(_cast(hidden, dtype), *[_cast(a, dtype) for a in args[1:]], **{k: _cast(v, dtype) for k, v in kwargs.items()})
        new_hidden = (new[0] if isinstance(new, tuple) else new).to(hidden.dtype)
        return (new_hidden, *output[1:]) if isinstance(output, tuple) else new_hidden

    def remove(self) -> None:
        self._handle.remove()


# ---------------------------------------------------------------- one entry point for both kinds of base


def resolve_stack(model: nn.Module, stack: str) -> str:
    """`method.block.stack` for `model`: `auto` is the encoder of an encoder-decoder (the study's
    choice) and the decoder of a decoder-only model; a decoder-only model has no encoder."""
    if is_causal(model):
        if stack == "encoder":
            raise ConfigError(f"method.block.stack=encoder: {type(model).__name__} is a decoder-only model with no encoder; "
                              "set method.block.stack=decoder (or auto)")
        return "decoder"
    return "encoder" if stack == "auto" else stack


def make_slot(model: nn.Module, block_cfg):
    """The hook that runs an inserted block in `model` (T5 stack or causal decoder)."""
    stack = resolve_stack(model, block_cfg.stack)
    if is_causal(model):
        return DecoderLayerSlot(model, block_cfg.position)
    from codecl.model.blocks import BlockSlot

    return BlockSlot(model, stack, block_cfg.position)


def make_block(model: nn.Module, block_cfg, init: str | None = None) -> nn.Module:
    """A new block for `model` as `block_cfg` places it (`init` overrides `block_cfg.init`)."""
    stack = resolve_stack(model, block_cfg.stack)
    init = init or block_cfg.init
    if is_causal(model):
        return new_decoder_layer(model, block_cfg.position, init)
    from codecl.model.blocks import new_block

    return new_block(model, stack, block_cfg.position, init)
