"""Model merging of per-task LoRA adapters: `merge_linear` (task arithmetic, Ilharco et al. 2023,
arXiv 2212.04089), `merge_ties` (TIES-merging, Yadav et al. 2023, arXiv 2306.01708) and `merge_dare`
(DARE, Yu et al. 2024, arXiv 2311.03099), all through PEFT's `add_weighted_adapter`.

Each stage trains a new LoRA adapter for its task exactly as `lora` does (same config, same seed, so
the same initialisation and weights). After the stage every per-task adapter trained so far is merged
into one adapter, `merged`, and every task — seen or not — is evaluated with it: `activate` ignores
the task id (only the newest task, while it is not yet merged, trains on its own adapter).

The merge acts on each adapter's weight delta ΔW_t = s_t B_t A_t (s_t = alpha / r) with weights
w_t = 1/T (`method.merge.weights=mean`) or 1 (`sum`):
- `merge_linear`: PEFT `cat` — A's and B's concatenated, so the merged adapter's ΔW is exactly
  Σ_t w_t ΔW_t (task arithmetic) at rank Σ_t r_t. (PEFT's `linear` averages A's and B's separately,
  which is not the sum of the deltas, so it is not used.)
- `merge_ties`: PEFT `ties_svd` — each ΔW_t trimmed to its `density` largest-magnitude entries,
  the sign of each entry elected (`majority_sign`: total or frequency), the agreeing entries of
  w_t ΔW_t averaged (disjoint merge); the result is written as a rank-`svd_rank` adapter by SVD.
- `merge_dare`: PEFT `dare_linear_svd` — each ΔW_t keeps a random `density` fraction of its entries,
  rescaled by 1/density (drop and rescale), then Σ_t w_t ΔW_t; written by SVD like TIES. The random
  drop is seeded by the number of tasks merged, so a merge is reproducible.
`svd_rank` 0 = Σ_t r_t (merge_linear's rank), capped at the smallest min(d_in, d_out) of the targeted
layers (one rank for every layer, as PEFT stores it). PEFT merges a single adapter as `linear` whatever the
type asked (w_1 s_1 B_1 A_1 at rank r_1: nothing trimmed or dropped), so the first stage's merged
adapter is the task's own adapter scaled by w_1 — not bit-identical to `lora`'s computation, which
is why no `first_stage_as` is declared for these methods.

Parameters stored (`stored_parameter_count`): every per-task adapter (the next merge needs all of
them: TIES and DARE are not incremental) plus the merged adapter (rank `r_m` = r_1 after one task,
then `svd_rank` or Σ_t r_t: (d_in + d_out) r_m per targeted layer), counted from the adapters'
shapes, so `codecl params` reports the same before anything is merged.

Storage per stage folder: the task's adapter as a plain PEFT folder (like `lora`), `merged/` holding
the merged adapter as a plain PEFT folder (`PeftModel.from_pretrained(base, folder / "merged")`
serves every task) with its own manifest, `module.json` (with `merged_tasks`), `manifest.json` last.
`load_task` reloads both, so a resumed run continues from the same merged model.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import torch

from codecl import __version__
from codecl.errors import CheckpointError
from codecl.fileio import read_json, verify_manifest, write_json, write_manifest
from codecl.methods.continual import ContinualModel, load_adapter, save_adapter

MERGED = "merged"
COMBINATION = {"merge_linear": "cat", "merge_ties": "ties_svd", "merge_dare": "dare_linear_svd"}
"""PEFT `add_weighted_adapter` combination type of each merging method."""


class MergeModel(ContinualModel):
    """Per-task LoRA adapters (trained like `lora`) merged after each stage into one `merged` adapter."""

    routes_by_task = False
    """One model for every task (no task id at evaluation): see `codecl.methods.build.routes_by_task`."""

    def __init__(self, base, method, method_cfg, base_info):
        super().__init__(base, method, method_cfg, base_info)
        self.merged_tasks: tuple[str, ...] = ()
        """The tasks whose adapters the `merged` adapter holds (empty: none merged yet)."""

    @property
    def combination_type(self) -> str:
        return COMBINATION[self.spec.name]

    # ------------------------------------------------------------------ structure
    def pending(self, task: str | None) -> bool:
        """True for an added task not merged yet: it trains (and is evaluated) on its own adapter."""
        return task is not None and task in self.tasks and task not in self.merged_tasks

    def activate(self, task: str | None) -> None:
        """A task not yet merged: its own adapter, trainable. Any other task: the merged adapter,
        nothing trainable — the task id is ignored. None: the bare base."""
        if task is not None and task not in self.tasks:
            raise ValueError(f"task {task!r} has no modules; added tasks: {self.tasks}")
        self.active = task
        if self.peft is not None:
            if task is None:
                self.peft.base_model.disable_adapter_layers()
            else:
                self.peft.base_model.enable_adapter_layers()
                self.peft.set_adapter(task if self.pending(task) or not self.merged_tasks else MERGED)
        for p in self.parameters():
            p.requires_grad_(False)
        if self.pending(task):
            for _, p in self.task_parameters(task):
                p.requires_grad_(True)

    # ------------------------------------------------------------------ merging
    def merge_weights(self, n: int) -> list[float]:
        return [1.0 / n] * n if self.method_cfg.merge.weights == "mean" else [1.0] * n

    def merged_rank(self, n: int | None = None) -> int:
        """Rank of the merged adapter of the first `n` tasks (all added tasks by default)."""
        n = len(self.tasks) if n is None else n
        ranks = [self.peft.peft_config[t].r for t in self.tasks[:n]]
        if n == 1:
            return ranks[0]
        if self.combination_type == "cat":
            return sum(ranks)
        return min(self.method_cfg.merge.svd_rank or sum(ranks), self._full_rank())

    def _full_rank(self) -> int:
        """The smallest min(d_in, d_out) of the targeted layers: an SVD rank above it cannot be stored
        (and at it the smallest layers' merged ΔW is exact)."""
        from peft.tuners.lora import LoraLayer

        first = self.tasks[0]
        return min(min(m.lora_A[first].weight.shape[1], m.lora_B[first].weight.shape[0])
                   for m in self.peft.modules() if isinstance(m, LoraLayer) and first in m.lora_A)

    def merge(self) -> None:
        """Merge every added task's adapter into `merged` (replacing an earlier merge)."""
        if not self.tasks or self.merged_tasks == tuple(self.tasks):
            return
        c, tasks = self.method_cfg.merge, list(self.tasks)
        if MERGED in self.peft.peft_config:
            self.peft.delete_adapter(MERGED)
        device = next(self.peft.parameters()).device
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # DARE's drop is random: seeded by the merge, RNG state kept
            torch.manual_seed(zlib.crc32(f"merge:{len(tasks)}".encode()))
            kwargs = {}
            if self.combination_type != "cat":
                kwargs = {"density": c.density, "svd_rank": self.merged_rank(len(tasks))}
            if self.combination_type == "ties_svd":
                kwargs["majority_sign_method"] = c.majority_sign
            self.peft.add_weighted_adapter(tasks, self.merge_weights(len(tasks)), MERGED, combination_type=self.combination_type, **kwargs)
        self.merged_tasks = tuple(tasks)
        self.activate(self.active if self.active in self.tasks else None)

    def end_stage(self, stage, data, pad_id: int, device, seed: int, batch_size: int) -> None:
        """Merge the adapters of every task trained so far (idempotent: `save_task` may have merged)."""
        self.merge()

    # ------------------------------------------------------------------ parameters
    def stored_parameter_count(self) -> int:
        """Every per-task adapter plus the merged adapter ((d_in + d_out) · r_m per targeted layer)."""
        from peft.tuners.lora import LoraLayer

        if not self.tasks:
            return 0
        adapters = sum(self.task_parameter_count(t) for t in self.tasks)
        rank, merged = self.merged_rank(), 0
        first = self.tasks[0]
        for module in self.peft.modules():
            if isinstance(module, LoraLayer) and first in module.lora_A:
                a, b = module.lora_A[first].weight, module.lora_B[first].weight  # (r, d_in), (d_out, r)
                merged += rank * (a.shape[1] + b.shape[0])
        return adapters + merged

    # ------------------------------------------------------------------ storage
    def save_task(self, task: str, folder: str | Path, extra: dict | None = None) -> Path:
        """The task's adapter (plain PEFT folder), the merged adapter after this stage in `merged/`."""
        self.merge()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_adapter(self.peft, task, folder)
        (folder / MERGED).mkdir(exist_ok=True)
        save_adapter(self.peft, MERGED, folder / MERGED)
        write_manifest(folder / MERGED)
        write_json(folder / "module.json", {"codecl_version": __version__, "method": self.spec.name, "task": task,
                                            "merged_tasks": list(self.merged_tasks), "combination_type": self.combination_type,
                                            "merge": _merge_settings(self.method_cfg.merge), "base_model": self.base_info.as_dict(),
                                            **(extra or {})})
        write_manifest(folder)
        return folder

    def load_task(self, task: str, folder: str | Path, saved_by: str | None = None) -> None:
        """Load the task's adapter and the merged adapter saved after its stage."""
        folder = Path(folder)
        super().load_task(task, folder, saved_by=saved_by)  # verifies the manifest, base fingerprint and method
        meta = read_json(folder / "module.json")
        merged_tasks = tuple(meta.get("merged_tasks", ()))
        if merged_tasks != tuple(self.tasks):
            raise CheckpointError(f"{folder}: its merged adapter holds tasks {list(merged_tasks)}, but the model has {self.tasks} "
                                  "(stages must be loaded in training order)")
        verify_manifest(folder / MERGED)
        from peft import LoraConfig

        if MERGED in self.peft.peft_config:
            self.peft.delete_adapter(MERGED)
        config = LoraConfig.from_pretrained(str(folder / MERGED))
        self.peft.add_adapter(MERGED, config)
        load_adapter(self.peft, MERGED, folder / MERGED)
        self.merged_tasks = merged_tasks
        self.activate(self.active if self.active in self.tasks else None)


def _merge_settings(c) -> dict:
    return {"weights": c.weights, "density": c.density, "majority_sign": c.majority_sign, "svd_rank": c.svd_rank}
