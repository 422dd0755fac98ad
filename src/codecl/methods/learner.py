"""`ContinualLearner`: the base class of every method's model, holding what they share.

A learner wraps one frozen base and the modules its method adds; the run loop
(`codecl.experiment`), accounting (`codecl.methods.accounting`) and loading (`codecl.serve`) drive
it through the interface below. `ContinualModel` (per-task modules: LoRA adapters and inserted
blocks, `codecl.methods.continual`) and `SharedModel` (one set of weights carried across tasks,
`codecl.methods.shared`) implement the method-specific parts; a plugin method usually subclasses
`ContinualModel` (`codecl.registry.MethodSpec.model_class`).

Shared here: construction from a `MethodSpec`, the `model` to call, forward/generate, parameter
counting, and the provenance every saved stage folder carries — `module.json` (codecl version,
method, task, base fingerprint) written before the manifest, and checked on load against the
loaded base's fingerprint and the method (or the `saved_by` method whose first stage this one
reuses, `MethodSpec.first_stage_as`).
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from codecl import __version__
from codecl.data.batching import EncodedPairs
from codecl.errors import AdapterMismatchError, CheckpointError
from codecl.fileio import read_json, verify_manifest, write_json, write_manifest
from codecl.methods.mixing import Stage
from codecl.model.base import BaseInfo
from codecl.registry import METHODS, MethodSpec


class ContinualLearner(nn.Module, metaclass=ABCMeta):
    """What the run loop needs of a method's model; subclasses implement the abstract part."""

    def __init__(self, base: nn.Module, method: str | MethodSpec, method_cfg, base_info: BaseInfo):
        super().__init__()
        self.spec = METHODS.get(method) if isinstance(method, str) else method
        self.method_cfg, self.base_info = method_cfg, base_info
        self.base = base
        self.peft = None  # a PeftModel once a LoRA adapter exists
        self.tasks: list[str] = []
        self.active: str | None = None

    # ------------------------------------------------------------------ structure
    @property
    def model(self) -> nn.Module:
        """What to call forward/generate on (the PEFT wrapper when LoRA is used)."""
        return self.peft if self.peft is not None else self.base

    def forward(self, **batch):
        return self.model(**batch)

    @torch.no_grad()
    def generate(self, **kwargs):
        return self.model.generate(**kwargs)

    # ------------------------------------------------------------------ parameters
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def task_parameter_count(self, task: str) -> int:
        return sum(p.numel() for _, p in self.task_parameters(task))

    # ------------------------------------------------------------------ provenance of saved stages
    def _write_provenance(self, folder: Path, task: str, extra: dict | None = None, **fields) -> Path:
        """`module.json` (what saved the folder, from which base), then the manifest: written last, it
        marks the folder complete."""
        write_json(folder / "module.json", {"codecl_version": __version__, "method": self.spec.name, "task": task, **fields,
                                            "base_model": self.base_info.as_dict(), **(extra or {})})
        write_manifest(folder)
        return folder

    def _check_provenance(self, folder: Path, saved_by: str | None = None, what: str = "modules", **expected) -> dict:
        """The folder's `module.json`, after checking the manifest, the base's fingerprint and the method
        (`saved_by`, else this one) and any `expected` fields; raises AdapterMismatchError/CheckpointError."""
        verify_manifest(folder)
        meta = read_json(folder / "module.json")
        saved_base = meta.get("base_model", {})
        if saved_base.get("fingerprint") != self.base_info.fingerprint:
            raise AdapterMismatchError(
                f"{folder}: {what} were trained on base {saved_base.get('name')!r} with fingerprint {saved_base.get('fingerprint')}, "
                f"but the loaded base {self.base_info.name!r} has fingerprint {self.base_info.fingerprint}")
        method = saved_by or self.spec.name
        if meta.get("method") != method or any(meta.get(k) != v for k, v in expected.items()):
            got = f" ({', '.join(f'{meta.get(k)} {k}' for k in expected)})" if expected else ""  # e.g. " (full weights)"
            want = f" ({', '.join(f'{v} {k}' for k, v in expected.items())})" if expected else ""
            raise CheckpointError(f"{folder}: saved by method {meta.get('method')!r}{got}, not {method!r}{want}")
        return meta

    # ------------------------------------------------------------------ the method-specific part
    # Abstract: a class that leaves one out cannot be instantiated (TypeError naming it).
    @abstractmethod
    def stages(self, tasks: list[str]) -> list[Stage]:
        """The training stages over `tasks` (one per task, or the joint baseline's single stage)."""

    @abstractmethod
    def add_task(self, task: str) -> None:
        """Create `task`'s modules (or, for shared weights, note the task)."""

    @abstractmethod
    def activate(self, task: str | None) -> None:
        """Put `task`'s modules in place, only they trainable; None: the bare base (or the model as it stands)."""

    @abstractmethod
    def task_parameters(self, task: str | None) -> list[tuple[str, nn.Parameter]]:
        """The (name, parameter) pairs `task`'s stage trains."""

    @abstractmethod
    def stored_parameter_count(self) -> int:
        """Every parameter kept beside the frozen base after the tasks added so far."""

    @abstractmethod
    def training_data(self, stage: Stage, data: dict[str, EncodedPairs], seed: int) -> EncodedPairs:
        """What `stage` trains on (its tasks' data, plus e.g. a replay buffer)."""

    @abstractmethod
    def save_task(self, task: str, folder: str | Path, extra: dict | None = None) -> Path:
        """Write the stage's modules to `folder` (atomic files; `_write_provenance` last)."""

    @abstractmethod
    def load_task(self, task: str, folder: str | Path, saved_by: str | None = None) -> None:
        """Load what `save_task` wrote (after `_check_provenance`)."""

    @abstractmethod
    def load_stages(self, seed_dir: str | Path, stages: list[str]) -> None:
        """Load a finished run's modules from its stage folders under `seed_dir`."""

    def regularizer(self) -> Callable[[], torch.Tensor] | None:
        """An extra loss term for the stage being trained (None: none)."""
        return None

    def end_stage(self, stage: Stage, data: dict[str, EncodedPairs], pad_id: int, device, seed: int, batch_size: int) -> None:
        """After a stage's training (e.g. EWC's Fisher estimate); nothing by default."""
        return None
