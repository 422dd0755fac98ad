"""Dropout with cheaper random numbers, for CPU training.

On CPU, `nn.Dropout` draws one Bernoulli sample per element from the Mersenne-Twister generator;
for a (960, 512) activation that costs more than a (960, 512) x (512, 512) matmul, and a LoRA
step of a codet5-small-shaped model runs 160 dropouts (96 LoRA + 64 of T5's own). `FastDropout`
draws 32 random bits per *two* elements and keeps an element when its 16-bit half is at or above
round(p * 65536): the drop probability is p to within 2**-17 (0.1 -> 0.100006), the surviving
values are scaled by 1/(1-p) as in `nn.Dropout`, and the masks come from torch's default
generator, so seeding and checkpointed RNG state govern them as before. It is about twice as fast
as `nn.Dropout` on this project's CPU (bench/train_throughput.py, variant `default` vs
`torch-dropout`). On GPUs `nn.Dropout` is already cheap (Philox) and is left in place.
"""
from __future__ import annotations

import torch
from torch import nn

_HALF = 1 << 15  # 16-bit halves of the random words are in [-32768, 32767]


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """`F.dropout(x, p, training=True)` in distribution (drop probability p to within 2**-17)."""
    if p <= 0:
        return x
    if p >= 1:
        return x * 0
    n = x.numel()
    words = torch.randint(-(1 << 31), (1 << 31) - 1, ((n + 1) // 2,), dtype=torch.int32, device=x.device)
    halves = words.view(torch.int16)[:n].view(x.shape)  # two 16-bit samples per 32-bit word
    keep = halves >= (round(p * (1 << 16)) - _HALF)
    return _KeepScale.apply(x, keep, 1.0 / (1.0 - p))


class _KeepScale(torch.autograd.Function):
    """x * keep * scale, saving only the boolean mask for backward (1 byte an element, as
    `nn.Dropout` does; a float mask would hold 4)."""

    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, x, 0).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0).mul_(ctx.scale), None, None


class FastDropout(nn.Dropout):
    """`nn.Dropout` with `fast_dropout`'s masks when training on CPU; identical otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        return fast_dropout(x, self.p)


def use_fast_dropout(model: nn.Module) -> int:
    """Turn every `nn.Dropout` under `model` (T5's own and PEFT's `lora_dropout`) into a
    `FastDropout` in place (same p, same module tree). Returns how many were switched."""
    switched = 0
    for module in model.modules():
        if type(module) is nn.Dropout:
            module.__class__ = FastDropout
            switched += 1
    return switched
