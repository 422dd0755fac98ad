"""`method.lora.rank: match_block`: the LoRA rank whose parameters match one inserted block's.

The config cannot know the model, so the rank is resolved when the model is built. LoRA of rank r
on a linear layer W ∈ ℝ^{out×in} adds A ∈ ℝ^{r×in} and B ∈ ℝ^{out×r} (arXiv 2106.09685): r·(in + out)
parameters, so one adapter costs r · Σ (in + out) over the targeted layers. The matched rank is the
smallest r ≥ 1 with r · Σ(in + out) ≥ the parameters of the block `method.block` inserts: the
adapter is at least as large as the block, and less than one rank-step (Σ(in + out)) larger.
On codet5-small (block: 3,146,752 parameters; q, k, v, o, wi, wo: 135,168 per rank) that is r = 24.
"""
from __future__ import annotations

import math

from torch import nn

from codecl.errors import ConfigError
from codecl.model.causal import linear_modules, linear_shape, resolve_lora_targets
from codecl.model.causal_blocks import make_block

MATCH_BLOCK = "match_block"

__all__ = ["MATCH_BLOCK", "lora_parameters_per_rank", "block_parameter_count", "resolve_lora_rank"]


def lora_parameters_per_rank(model: nn.Module, target_modules) -> int:
    """Σ (in_features + out_features) over the layers LoRA targets (names ending in a target, as PEFT matches).

    Also right after PEFT has wrapped them: its `lora.Linear` keeps `in_features`/`out_features`,
    and its inner modules (`base_layer`, `lora_A.<adapter>`) do not end in a target name. GPT-2's Conv1D
    layers count as the linear maps they are; empty `target_modules` = the family default (as LoRA uses)."""
    return sum(sum(linear_shape(m)) for _, m in linear_modules(model, resolve_lora_targets(target_modules, model)))


def block_parameter_count(model: nn.Module, block_cfg) -> int:
    """Parameters of the block `block_cfg` would insert into `model` (built, counted, dropped)."""
    return sum(p.numel() for p in make_block(model, block_cfg, "random").parameters())


def resolve_lora_rank(lora_cfg, block_cfg, model: nn.Module) -> int:
    """`lora_cfg.rank` as an integer: itself, or for `match_block` the matched rank (module docstring)."""
    if lora_cfg.rank != MATCH_BLOCK:
        return int(lora_cfg.rank)
    per_rank = lora_parameters_per_rank(model, lora_cfg.target_modules)
    if per_rank == 0:
        raise ConfigError(f"method.lora.rank=match_block: no linear layer of the base is named one of "
                          f"method.lora.target_modules {list(resolve_lora_targets(lora_cfg.target_modules, model))}")
    return max(1, math.ceil(block_parameter_count(model, block_cfg) / per_rank))
