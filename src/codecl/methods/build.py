"""Build a method's model from its registry spec: one interface for every method.

`MODEL_KINDS` maps a spec's `kind` to its class; each class offers the `ContinualLearner`
interface that `codecl.experiment` and `codecl.methods.accounting` drive, so adding a method
means registering a spec (and, only if no class fits, one sibling class), never a branch in the loop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import torch
from torch import nn

from codecl.data.batching import EncodedPairs
from codecl.methods.continual import ContinualModel
from codecl.methods.mixing import Stage
from codecl.methods.lwf import LwfModel
from codecl.methods.merging import MergeModel
from codecl.methods.olora import OLoraModel
from codecl.methods.registry import METHODS, MethodSpec
from codecl.methods.shared import SharedModel
from codecl.model.base import BaseInfo


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


MODEL_KINDS: dict[str, type] = {"modules": ContinualModel, "olora": OLoraModel, "shared": SharedModel, "merge": MergeModel,
                               "lwf": LwfModel}


def build_model(base: nn.Module, method: str | MethodSpec, method_cfg, base_info: BaseInfo) -> ContinualLearner:
    """The model of `method` around the frozen `base`."""
    spec = METHODS.get(method) if isinstance(method, str) else method
    return MODEL_KINDS[spec.kind](base, spec, method_cfg, base_info)
