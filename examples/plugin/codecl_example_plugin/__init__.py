"""A codecl plugin: one method (`lora_qv`) and one metric (`token_f1`), registered by entry points.

Nothing here is imported by codecl until a run, a config or `codecl list` asks for a name it does
not hold; then `codecl.registry` loads the entry points of `codecl.methods` and `codecl.metrics`.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

from codecl.methods.continual import ContinualModel, lora_config
from codecl.registry import MethodSpec, MetricSpec


@dataclass(frozen=True)
class LoraQVConfig:
    """The `method.lora_qv` config section."""

    rank: int = 8
    """LoRA rank r of the query and value projections."""
    alpha: int = 16
    """LoRA scaling alpha (scale = alpha / r)."""

    def __post_init__(self):
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank must be an integer >= 1, got {self.rank!r}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha!r}")


QUERY_VALUE = {"t5": ("q", "v"), "causal": ("q_proj", "v_proj")}
"""The query and value projections' names: T5 (`q`, `v`) and Llama/Qwen2/Mistral-style causal LMs."""


class LoraQVModel(ContinualModel):
    """`lora` with its adapters on the attention's query and value projections only."""

    def _lora_config(self):
        section = self.method_cfg.section(self.spec.name)
        kind = "t5" if getattr(self.base.config, "is_encoder_decoder", False) else "causal"
        lora = dataclasses.replace(self.method_cfg.lora, rank=section.rank, alpha=section.alpha, target_modules=QUERY_VALUE[kind])
        return lora_config(dataclasses.replace(self.method_cfg, lora=lora), self.base_info, self.base)


METHOD = MethodSpec(
    name="lora_qv",
    lora=True,
    block=None,
    description="a new LoRA adapter per task on the attention's query and value projections only (plugin)",
    model_class=LoraQVModel,
    config_class=LoraQVConfig,
)


def token_f1_scores(hyps: list[str], refs: list[str]) -> list[float]:
    """Per example: F1 of the code-token multisets of output and reference (1.0 when both are empty)."""
    from codecl.evaluation.metrics import code_tokenize

    scores = []
    for hyp, ref in zip(hyps, refs):
        h, r = Counter(code_tokenize(hyp)), Counter(code_tokenize(ref))
        common = sum((h & r).values())
        if not h and not r:
            scores.append(1.0)
        elif common == 0:
            scores.append(0.0)
        else:
            precision, recall = common / sum(h.values()), common / sum(r.values())
            scores.append(2 * precision * recall / (precision + recall))
    return scores


def token_f1(hyps: list[str], refs: list[str], language: str | None) -> tuple[float, list[float]]:
    """The metric's `compute`: the corpus score (the mean) and the per-example values (predictions field `token_f1`)."""
    scores = token_f1_scores(hyps, refs)
    return sum(scores) / len(scores), scores


def metric() -> MetricSpec:
    """The `codecl.metrics` entry point: a function returning the spec (a spec object works too)."""
    return MetricSpec(name="token_f1", compute=token_f1, description="mean F1 of the code-token multisets of output and reference (plugin)")
