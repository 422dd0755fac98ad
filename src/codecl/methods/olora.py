"""O-LoRA (Wang et al. 2023, "Orthogonal Subspace Learning for Language Model Continual
Learning", arXiv 2310.14152): a new LoRA adapter per task, learned in a subspace orthogonal to
the earlier tasks' adapters.

While task t trains, the adapters of tasks s < t stay frozen *and active*: PEFT sums the
outputs of every active adapter, so the model after stage t is base + Σ_{s≤t} B_s A_s and
inference needs no task identity (every task is evaluated with all adapters trained so far).
The loss adds  λ1 Σ_{s<t} Σ_layers ‖A_s A_tᵀ‖²_F  (A of shape (r, d_in): the rows span each
adapter's input subspace) and optionally  λ2 ‖θ_t‖²  on the new adapter's weights.
PEFT's `set_adapter([...])` marks every named adapter trainable; `activate` re-sets
requires_grad so only the newest adapter trains.
"""
from __future__ import annotations

import torch

from codecl.methods.continual import ContinualModel


def orthogonality_penalty(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Σ ‖A_s A_tᵀ‖²_F over (A_s, A_t) pairs, each A of shape (r, d_in); 0 for orthogonal row spaces."""
    return sum(((a_s @ a_t.T) ** 2).sum() for a_s, a_t in pairs)  # (r_s, r_t) per pair


class OLoraModel(ContinualModel):
    """A `ContinualModel` with per-task LoRA whose adapters are all active and summed."""

    routes_by_task = False
    """One model for every task (no task id at evaluation): see `codecl.methods.build.routes_by_task`."""

    def activate(self, task: str | None) -> None:
        """Every added adapter in place (summed); only `task`'s trains. None = the bare base."""
        if task is not None and task not in self.tasks:
            raise ValueError(f"task {task!r} has no modules; added tasks: {self.tasks}")
        self.active = task
        if self.peft is not None:
            if task is None:
                self.peft.base_model.disable_adapter_layers()
            else:
                self.peft.base_model.enable_adapter_layers()
                self.peft.base_model.set_adapter(list(self.tasks))
        for p in self.parameters():
            p.requires_grad_(False)
        for _, p in self.task_parameters(task):
            p.requires_grad_(True)

    def lora_a_pairs(self, task: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(A_s, A_task) for every layer and every task s added before `task`."""
        from peft.tuners.lora import LoraLayer

        earlier = self.tasks[: self.tasks.index(task)]
        pairs = []
        for module in self.peft.modules():
            if isinstance(module, LoraLayer) and task in module.lora_A:
                new = module.lora_A[task].weight
                pairs += [(module.lora_A[s].weight, new) for s in earlier if s in module.lora_A]
        return pairs

    def olora_loss(self, task: str) -> torch.Tensor:
        """λ1 Σ_{s<t} ‖A_s A_tᵀ‖² + λ2 ‖θ_t‖² for the adapter of `task`."""
        c = self.method_cfg.olora
        loss = torch.zeros((), device=next(self.parameters()).device)
        pairs = self.lora_a_pairs(task)
        if c.lambda_orth > 0 and pairs:
            loss = loss + c.lambda_orth * orthogonality_penalty(pairs)
        if c.lambda_l2 > 0:
            loss = loss + c.lambda_l2 * sum((p ** 2).sum() for _, p in self.task_parameters(task))
        return loss

    def regularizer(self):
        """The O-LoRA loss of the active task, when it has any term."""
        c, task = self.method_cfg.olora, self.active
        if task is None or not ((c.lambda_orth > 0 and self.tasks.index(task) > 0) or c.lambda_l2 > 0):
            return None
        return lambda: self.olora_loss(task)
