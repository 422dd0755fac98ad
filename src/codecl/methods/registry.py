"""The method registry: each continual-learning method is a small spec of which modules it adds.

| method        | LoRA per task | inserted block          |
|---------------|---------------|-------------------------|
| lora          | yes           | none                    |
| full_layer    | no            | one per task            |
| hybrid        | yes           | one per task            |
| hybrid_shared | yes           | one, shared by all tasks and trained again with each |

Baselines run in the same harness (same data, evaluation and report):

| method        | what is trained                               | what keeps the past                  |
|---------------|-----------------------------------------------|--------------------------------------|
| sequential_ft | the whole model, task after task              | nothing (the forgetting reference)   |
| joint         | one LoRA adapter (or the whole model), once, on all tasks' data | nothing to keep: the multitask upper bound |
| replay        | one LoRA adapter (or the whole model) carried across tasks | a small buffer of earlier tasks' examples mixed in |
| ewc           | one LoRA adapter (or the whole model) carried across tasks | λ/2 Σ F (θ − θ*)² (Kirkpatrick et al. 2017) |
| olora         | a new LoRA adapter per task; earlier ones frozen and summed | ‖A_s A_tᵀ‖² orthogonality (O-LoRA, arXiv 2310.14152) |
| merge_linear  | a new LoRA adapter per task (as `lora`)       | all adapters merged after each stage: Σ w_t ΔW_t (task arithmetic; PEFT `cat`) |
| merge_ties    | a new LoRA adapter per task (as `lora`)       | TIES merge (trim, elect sign, disjoint mean; PEFT `ties_svd`) |
| merge_dare    | a new LoRA adapter per task (as `lora`)       | DARE merge (drop and rescale, then sum; PEFT `dare_linear_svd`) |
| lwf           | one LoRA adapter (or the whole model) carried across tasks | λ T² KL(previous model ‖ model) on the new task's inputs (Li & Hoiem 2017) |

`kind` picks the model class that implements a spec (`codecl.methods.build.MODEL_KINDS`):
`modules` (`ContinualModel`), `olora` (`OLoraModel`), `shared` (`SharedModel`, one set of
weights carried across tasks, set up by the spec's `plan`), `merge` (`MergeModel`,
`codecl.methods.merging`) or `lwf` (`LwfModel`, a `SharedModel` with distillation, `codecl.methods.lwf`).
The merging methods evaluate every task with the merged adapter (no task id) and declare no
`first_stage_as`: their first stage is scored with the merged (rescaled) adapter, not bit-identical to `lora`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from codecl.errors import ConfigError

JOINT_STAGE = "joint"
"""The one training stage of the joint baseline (one model trained once on every task's data, the
multitask upper bound). It has no task sequence: its run has the stages `["base", "joint"]` and two
score rows (the base model, then the joint model on every task); its per-stage fields are keyed
`joint`; it is complete with those two stages; its forgetting is `{}` and bwt / fwt `null` (no
earlier stage to compare with); `final_average` is comparable with every other method's
(`codecl.results` reads results.json by it)."""


@dataclass(frozen=True)
class SharedPlan:
    """What a shared-weights baseline does (read from the method config when the model is built)."""

    weights: str
    """`lora` (one adapter carried across tasks) or `full` (the whole model is trained)."""
    joint: bool = False
    """True: one stage, named `joint` (`JOINT_STAGE`), on the union of every task's training data."""
    replay_per_task: int = 0
    """Examples of each earlier task mixed into each later stage's training data."""
    ewc_lambda: float = 0.0
    """EWC penalty strength λ (0 = no penalty)."""
    fisher_batches: int = 0
    """Batches of a finished task's training data that estimate its diagonal Fisher."""


@dataclass(frozen=True)
class MethodSpec:
    name: str
    lora: bool
    """Adds a PEFT LoRA adapter per task."""
    block: str | None
    """None, `per_task` or `shared`."""
    description: str
    kind: str = "modules"
    """Model class: `modules` (ContinualModel), `olora` (OLoraModel), `shared` (SharedModel), `merge` (MergeModel)
    or `lwf` (LwfModel)."""
    plan: Callable | None = None
    """For `shared`: method config -> SharedPlan."""
    first_stage_as: str | None = None
    """A method whose first stage trains exactly the same modules, from the same initialisation,
    on the same data (hybrid_shared's first stage is hybrid's). A run holding both reuses that
    stage instead of training it twice (`codecl.experiment`); the outcome is bit-identical."""


class Registry:
    """A name -> spec map whose miss lists what exists (lm-evaluation-harness style)."""

    def __init__(self, kind: str):
        self.kind, self._items = kind, {}

    def register(self, spec: MethodSpec) -> MethodSpec:
        if spec.name in self._items:
            raise ValueError(f"{self.kind} {spec.name!r} registered twice")
        self._items[spec.name] = spec
        return spec

    def get(self, name: str) -> MethodSpec:
        if name not in self._items:
            raise ConfigError(f"Unknown {self.kind} {name!r}. Available: {', '.join(self._items)}")
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)


METHODS = Registry("method")
METHODS.register(MethodSpec("lora", True, None, "a new LoRA adapter per task"))
METHODS.register(MethodSpec("full_layer", False, "per_task", "a new inserted transformer block per task"))
METHODS.register(MethodSpec("hybrid", True, "per_task", "per-task LoRA + per-task inserted block"))
METHODS.register(MethodSpec("hybrid_shared", True, "shared", "per-task LoRA + one inserted block shared by all tasks",
                            first_stage_as="hybrid"))

# ---------------------------------------------------------------- baselines (issue 8)
METHODS.register(MethodSpec("sequential_ft", False, None, "full fine-tuning of the whole model, task after task",
                            kind="shared", plan=lambda c: SharedPlan("full")))
METHODS.register(MethodSpec("joint", False, None, "one model trained once on all tasks' data (multitask upper bound)",
                            kind="shared", plan=lambda c: SharedPlan(c.joint.base, joint=True)))
METHODS.register(MethodSpec("replay", False, None, "one adapter (or the whole model) trained on each task plus a replay buffer",
                            kind="shared", plan=lambda c: SharedPlan(c.replay.base, replay_per_task=c.replay.buffer_per_task)))
METHODS.register(MethodSpec("ewc", False, None, "one adapter (or the whole model) with elastic weight consolidation",
                            kind="shared", plan=lambda c: SharedPlan(c.ewc.base, ewc_lambda=c.ewc.lambda_penalty,
                                                                     fisher_batches=c.ewc.fisher_batches)))
METHODS.register(MethodSpec("olora", True, None, "per-task LoRA, earlier adapters frozen and summed, orthogonal A matrices",
                            kind="olora"))
METHODS.register(MethodSpec("merge_linear", True, None, "per-task LoRA adapters merged after each stage by task arithmetic",
                            kind="merge"))
METHODS.register(MethodSpec("merge_ties", True, None, "per-task LoRA adapters merged after each stage by TIES", kind="merge"))
METHODS.register(MethodSpec("merge_dare", True, None, "per-task LoRA adapters merged after each stage by DARE", kind="merge"))
METHODS.register(MethodSpec("lwf", False, None, "one adapter (or the whole model) with learning-without-forgetting distillation",
                            kind="lwf", plan=lambda c: SharedPlan(c.lwf.base)))
