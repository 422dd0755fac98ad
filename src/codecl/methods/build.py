"""Build a method's model from its registry spec: one interface for every method.

A spec names its class (`MethodSpec.model_class`, or a built-in `kind` through
`codecl.registry.MODEL_KINDS`); each class offers the `ContinualLearner` interface that
`codecl.experiment` and `codecl.methods.accounting` drive, so adding a method means registering a
spec (and, only if no class fits, one sibling class), never a branch in the loop. A plugin registers
its spec through the `codecl.methods` entry point (`codecl.registry`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import torch
from torch import nn

from codecl.data.batching import EncodedPairs
from codecl.methods.mixing import Stage
from codecl.model.base import BaseInfo
from codecl.registry import METHODS, MODEL_KINDS as KIND_REFERENCES, MethodSpec, resolve


class ContinualLearner(Protocol):
    """What the run loop needs of a method's model."""

    tasks: list[str]
    active: str | None

    def stages(self, tasks: list[str]) -> list[Stage]: ...
    def add_task(self, task: str) -> None: ...
    def activate(self, task: str | None) -> None: ...
    def task_parameters(self, task: str | None) -> list[tuple[str, nn.Parameter]]: ...
    def task_parameter_count(self, task: str) -> int: ...
    def stored_parameter_count(self) -> int: ...
    def training_data(self, stage: Stage, data: dict[str, EncodedPairs], seed: int) -> EncodedPairs: ...
    def regularizer(self) -> Callable[[], torch.Tensor] | None: ...
    def end_stage(self, stage: Stage, data: dict[str, EncodedPairs], pad_id: int, device, seed: int, batch_size: int) -> None: ...
    def save_task(self, task: str, folder: str | Path, extra: dict | None = None) -> Path: ...
    def load_task(self, task: str, folder: str | Path, saved_by: str | None = None) -> None: ...
    def load_stages(self, seed_dir: str | Path, stages: list[str]) -> None: ...


MODEL_KINDS: dict[str, type] = {kind: resolve(ref) for kind, ref in KIND_REFERENCES.items()}
"""The built-in kinds' classes."""


def build_model(base: nn.Module, method: str | MethodSpec, method_cfg, base_info: BaseInfo) -> ContinualLearner:
    """The model of `method` around the frozen `base`."""
    spec = METHODS.get(method) if isinstance(method, str) else method
    return spec.model_type()(base, spec, method_cfg, base_info)


def routes_by_task(spec: MethodSpec, model) -> bool:
    """Evaluation picks the modules of each task (per-task modules): the spec says so, else a
    `ContinualModel` that does not opt out (`routes_by_task = False`, e.g. a merged adapter)."""
    from codecl.methods.continual import ContinualModel

    if spec.routes_by_task is not None:
        return spec.routes_by_task
    return isinstance(model, ContinualModel) and getattr(model, "routes_by_task", True)


def keeps_one_set_of_weights(spec: MethodSpec) -> bool:
    """The method's stages share one set of weights (only the last stage's is needed to load it)."""
    from codecl.methods.shared import SharedModel

    return issubclass(spec.model_type(), SharedModel)
