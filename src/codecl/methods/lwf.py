"""Learning without forgetting (Li & Hoiem 2017, "Learning without Forgetting", IEEE TPAMI 40(12),
arXiv 1606.09282) for sequence-to-sequence and decoder-only code models.

One set of weights — a LoRA adapter or the whole model (`method.lwf.base`) — is carried across tasks
like `ewc`'s. After each stage the trainable weights are snapshotted: that snapshot is the teacher, the
model as it stood at the end of the previous stage (for LoRA only the adapter's weights are copied,
never the base). From the second stage on every training batch's loss is

    CE(student) + λ T² KL(p_teacher^T ‖ p_student^T)

where p^T = softmax(logits / T) over the vocabulary at each target token, computed on the new task's
own training inputs, teacher-forced on the batch; positions whose label is -100 (padding, and for a
decoder-only model the prompt) are excluded, with the same alignment as the evaluation loss
(`codecl.evaluation.loss._aligned`: one step apart for a decoder-only model), and the KL is the mean
over the counted tokens. T² keeps the gradient's scale independent of T (Hinton et al. 2015).

The term is added in `forward` while the model is in training mode and a teacher exists (so
`codecl.train` needs no hook): the teacher's logits come first, under `no_grad`, in eval mode (no
dropout), by swapping the snapshot into the trainable parameters and back; then the student's
forward runs as usual. Evaluation (eval mode) sees the plain cross-entropy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from codecl.data.batching import IGNORE_INDEX
from codecl.methods.shared import SharedModel


def distillation_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over masked positions of KL(softmax(t/T) ‖ softmax(s/T)); logits (B, L, V), mask (B, L)."""
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(dim=-1)  # (B, L)
    mask = mask.to(kl.dtype)
    return (kl * mask).sum() / mask.sum().clamp(min=1.0)


class LwfModel(SharedModel):
    """A `SharedModel` whose later stages distil the previous stage's model on the new task's inputs."""

    def __init__(self, base, method, method_cfg, base_info):
        super().__init__(base, method, method_cfg, base_info)
        self.teacher: list[torch.Tensor] | None = None
        """Snapshot of the trainable weights at the end of the previous stage (None before the first ends)."""
        self.last_distillation: float | None = None
        """The distillation term λ T² KL of the latest training forward (None when none was added)."""

    def end_stage(self, stage, data, pad_id: int, device, seed: int, batch_size: int) -> None:
        """The finished stage's weights become the teacher of the next stage."""
        self.teacher = [p.detach().clone() for _, p in self._weights()]

    def distillation_active(self) -> bool:
        return self.teacher is not None and self.method_cfg.lwf.lambda_distill > 0

    @torch.no_grad()
    def teacher_logits(self, **batch) -> torch.Tensor:
        """The teacher's logits on `batch`: the snapshot swapped in, eval mode, then everything restored."""
        params = [p for _, p in self._weights()]
        kept = [p.data for p in params]
        modes = {m: m.training for m in self.modules()}
        try:
            for p, t in zip(params, self.teacher):
                p.data = t
            self.eval()
            return self.model(**batch).logits.detach()
        finally:
            for p, d in zip(params, kept):
                p.data = d
            for m, mode in modes.items():
                m.training = mode

    def distillation_loss(self, batch: dict, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        """λ T² KL(teacher ‖ student) over the batch's label tokens (the teacher's logits computed if not given)."""
        from codecl.evaluation.loss import _aligned

        c = self.method_cfg.lwf
        if teacher_logits is None:
            teacher_logits = self.teacher_logits(**batch)
        labels = batch["labels"]
        t, _ = _aligned(self, teacher_logits, labels)
        s, aligned = _aligned(self, student_logits, labels)
        return c.lambda_distill * c.temperature ** 2 * distillation_kl(t, s, aligned != IGNORE_INDEX, c.temperature)

    def forward(self, **batch):
        if not (self.training and self.distillation_active() and "labels" in batch):
            return self.model(**batch)
        teacher = self.teacher_logits(**batch)  # first: the student's graph is untouched by the swap
        out = self.model(**batch)
        term = self.distillation_loss(batch, out.logits, teacher)
        self.last_distillation = float(term.detach())
        out.loss = out.loss + term.to(out.loss.dtype)
        return out
