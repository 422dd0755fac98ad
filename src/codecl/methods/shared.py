"""`SharedModel`: one set of trainable weights carried across every task (the baselines'
sibling of `ContinualModel`, with the same interface).

The weights are one PEFT LoRA adapter (named `shared`; arXiv 2106.09685) or the whole model
(full fine-tuning, trained in float32). What the method does beside training them comes from
its `SharedPlan` (`codecl.registry`):
- `sequential_ft`: full fine-tuning task after task, nothing else — the forgetting reference;
- `joint`: a single stage, named `joint`, on the union of all tasks' data — the multitask bound;
- `replay`: `replay_per_task` examples of every earlier task mixed into each stage's data;
- `ewc`: λ/2 Σ_t Σ F_t (θ − θ*_t)² added to the loss, F_t estimated after each task
  (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural networks", PNAS).

Every task is evaluated with the current weights (there is nothing task-specific to switch).
Storage per stage folder: PEFT `adapter_config.json` + `adapter_model.safetensors`, or the
full model's weights in `model.safetensors` (tied tensors once; `safetensors.torch.save_model`),
then `module.json` and `manifest.json` last. `stored_parameter_count` counts what inference needs
after the last stage: the adapter, or one full copy of the model (it replaces the base).
"""
from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from codecl.data.batching import EncodedPairs
from codecl.errors import CheckpointError
from codecl.fileio import atomic_write
from codecl.methods.continual import load_adapter, lora_config, save_adapter
from codecl.methods.ewc import EwcPenalty, fisher_diagonal
from codecl.methods.learner import ContinualLearner
from codecl.methods.mixing import Stage, concat_pairs, replay_buffer
from codecl.registry import JOINT_STAGE as JOINT, MethodSpec
from codecl.model.base import BaseInfo

ADAPTER = "shared"


class SharedModel(ContinualLearner):
    def __init__(self, base: nn.Module, method: str | MethodSpec, method_cfg, base_info: BaseInfo):
        super().__init__(base, method, method_cfg, base_info)
        self.plan = self.spec.plan(method_cfg)
        self.ewc = EwcPenalty(self.plan.ewc_lambda)
        if self.plan.weights == "full":
            self.base.float()  # a bfloat16 frozen base would be trained in bfloat16 otherwise

    # ------------------------------------------------------------------ structure
    def stages(self, tasks: list[str]) -> list[Stage]:
        """One stage per task, or the single `joint` stage on all of them."""
        return [Stage(JOINT, tuple(tasks))] if self.plan.joint else [Stage(t, (t,)) for t in tasks]

    def add_task(self, task: str) -> None:
        """The first task creates the shared adapter (LoRA weights); later tasks reuse it."""
        if task in self.tasks:
            raise ValueError(f"task {task!r} already added")
        if self.plan.weights == "lora" and self.peft is None:
            from peft import get_peft_model

            self.base.name_or_path = self.base.config._name_or_path = self.base_info.path
            self.peft = get_peft_model(self.base, lora_config(self.method_cfg, self.base_info, self.base), adapter_name=ADAPTER)
        self.tasks.append(task)

    def activate(self, task: str | None) -> None:
        """The shared weights in place (None = the model as it stands, nothing trainable)."""
        if task is not None and task not in self.tasks:
            raise ValueError(f"task {task!r} has no modules; added tasks: {self.tasks}")
        self.active = task
        for p in self.parameters():
            p.requires_grad_(False)
        for _, p in self.task_parameters(task):
            p.requires_grad_(True)

    # ------------------------------------------------------------------ parameters
    def _weights(self) -> list[tuple[str, nn.Parameter]]:
        if self.plan.weights == "full":
            return list(self.base.named_parameters())
        if self.peft is None:
            return []
        return [(n, p) for n, p in self.peft.named_parameters() if "lora_" in n]

    def task_parameters(self, task: str | None) -> list[tuple[str, nn.Parameter]]:
        """Every task trains the same weights."""
        return [] if task is None else self._weights()

    def stored_parameter_count(self) -> int:
        return sum(p.numel() for _, p in self._weights()) if self.tasks else 0

    # ------------------------------------------------------------------ training hooks
    def training_data(self, stage: Stage, data: dict[str, EncodedPairs], seed: int) -> EncodedPairs:
        """The stage's own data, plus a replay buffer of every task trained before it."""
        own = concat_pairs([data[t] for t in stage.tasks])
        earlier = {t: data[t] for t in self.tasks if t in data and t not in stage.tasks}  # stages named after a task
        if not self.plan.replay_per_task or not earlier:
            return own
        return concat_pairs([own, replay_buffer(earlier, self.plan.replay_per_task, seed)])

    def regularizer(self):
        """The EWC penalty once a task is consolidated (None otherwise: nothing to add)."""
        return self.ewc if self.ewc.terms else None

    def end_stage(self, stage: Stage, data: dict[str, EncodedPairs], pad_id: int, device, seed: int, batch_size: int) -> None:
        """EWC: estimate the finished task's diagonal Fisher at θ* and keep both."""
        if self.plan.ewc_lambda <= 0:
            return
        named = self._weights()
        own = concat_pairs([data[t] for t in stage.tasks])
        fisher = fisher_diagonal(self, named, own, pad_id, device, self.plan.fisher_batches, batch_size, seed)
        self.ewc.consolidate(named, fisher)

    # ------------------------------------------------------------------ storage
    def save_task(self, task: str, folder: str | Path, extra: dict | None = None) -> Path:
        """Write the shared weights as they are after `task`'s stage (atomic files, manifest last)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.plan.weights == "full":
            self.base.config.save_pretrained(folder)  # config.json beside model.safetensors: a from_pretrained folder
            atomic_write(folder / "model.safetensors", lambda tmp: save_model(self.base, tmp, metadata={"format": "pt"}))
        else:
            save_adapter(self.peft, ADAPTER, folder)
        return self._write_provenance(folder, task, extra, weights=self.plan.weights)

    def load_stages(self, seed_dir: str | Path, stages: list[str]) -> None:
        """Load a finished run's weights: the last stage's folder holds all of them, as every task
        is served (a joint run: its `joint` stage); earlier stages are not read."""
        if stages:
            self.load_task(stages[-1], Path(seed_dir) / stages[-1])

    def load_task(self, task: str, folder: str | Path, saved_by: str | None = None) -> None:
        """Load the shared weights saved after `task`'s stage (adds the task if needed). `saved_by` names
        another method whose weights fit this one's (`MethodSpec.first_stage_as`); they must be of the same kind."""
        folder = Path(folder)
        self._check_provenance(folder, saved_by, what="weights", weights=self.plan.weights)
        if task not in self.tasks:
            self.add_task(task)
        if self.plan.weights == "full":
            path = folder / "model.safetensors"
            try:
                load_model(self.base, str(path), strict=True)
            except (SafetensorError, OSError, RuntimeError) as exc:
                raise CheckpointError(f"{path}: does not fit the model ({str(exc).splitlines()[0]})") from exc
        else:
            load_adapter(self.peft, ADAPTER, folder)

