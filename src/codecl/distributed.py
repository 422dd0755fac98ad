"""Data-parallel runs on Hugging Face Accelerate: this process's rank, its share of the work, the collectives.

`codecl run` under `torchrun` or `accelerate launch` (several processes, one device each):
every rank loads the same base and data and walks the same seeded batch order; each optimizer
step's global batch (`train.batch_size`) is cut into one contiguous slice per rank, so the
global batch, the step count and the learning-rate meaning are those of a single process.
Evaluation hands whole generation batches to ranks round-robin and gathers the strings, so
every example is decoded in the very batch a single process would use. Only the main process
writes files; the others wait where they must (`main_process_first` around cache builds).

Gradient synchronisation is a manual all-reduce, not `DistributedDataParallel`:
- the trainable set changes every stage (a new LoRA adapter, a new inserted block), while DDP
  binds its parameter set and buckets at construction; re-wrapping per stage would rebuild DDP
  around a PEFT model whose inserted blocks are run by a forward hook outside the module tree;
- the loss must be weighted by each slice's share of the global batch's label tokens (T5's loss
  is a mean over label tokens; equal-weight averaging as DDP does would make a short slice count
  as much as a long one), and the non-finite-loss decision must be the same on every rank;
- trainable parameters here are small (adapters and one block: ~0.6-3 M values), so one flat
  all-reduce per step after backward costs little next to the forward/backward it follows.
Each rank backpropagates `loss_r * n_r / N` (n_r its label tokens, N the global batch's), and
one all-reduce of [grads..., weighted loss] gives every rank the single-process mean gradient
and loss (up to floating-point summation order); clipping and the AdamW step then run
identically everywhere. Trainable parameters are broadcast from the main process at stage start
and end, so every rank trains, evaluates and saves the same weights.

Dropout: ranks other than the main one reseed their torch generator from (seed, rank, step) at
stage start and at every checkpoint boundary, so slices draw independent masks and a resumed
stage continues bit for bit (the main process's generator state is in the checkpoint).

With one process nothing here creates a process group or imports Accelerate (unless bf16 is
asked for): `current()` is a plain single-process object and every helper is a pass-through.

Launchers: `torchrun --nproc-per-node N -m codecl run ...` and `accelerate launch --multi_gpu
--num_processes N -m codecl run ...` start N processes (gloo on CPU, NCCL on GPUs). Note that
accelerate 1.15's `accelerate launch --cpu --num_processes N` starts ONE process unless it is
given an mpirun hostfile (huggingface/accelerate#2741); codecl detects that case and says so.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field

import torch

MIXED_PRECISION = ("no", "bf16")
"""`train.mixed_precision` values. fp16 is left out on purpose: T5 activations overflow fp16's
range (the known T5 fp16 NaN problem) and would need loss scaling; bf16 has float32's range."""

_WORLD_ENV = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_world_size() -> int:
    """How many processes the launcher started (torchrun / accelerate: WORLD_SIZE; mpirun: PMI/OMPI)."""
    for name in _WORLD_ENV:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1


@dataclass
class Distributed:
    """This process's place in the data-parallel group (rank 0 of 1 when launched plainly)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None
    """The device this rank computes on (None: the caller's choice, single process only)."""
    mixed_precision: str = "no"
    notes: list[str] = field(default_factory=list)
    """One-line remarks for the user about how the run was launched."""
    _state: object | None = None  # accelerate.PartialState when world_size > 1
    _accelerator: object | None = None  # accelerate.Accelerator when mixed precision is on

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    # ------------------------------------------------------------------ coordination
    def barrier(self) -> None:
        if self.is_distributed:
            self._state.wait_for_everyone()

    @contextlib.contextmanager
    def main_process_first(self):
        """The main process runs the block first (e.g. builds a cache), the others then (reading it)."""
        if not self.is_distributed:
            yield
            return
        with self._state.main_process_first():
            yield

    def autocast(self):
        """bf16 autocast through Accelerate when `train.mixed_precision=bf16`, else a no-op."""
        return self._accelerator.autocast() if self._accelerator is not None else contextlib.nullcontext()

    # ------------------------------------------------------------------ sharding
    def shard(self, items: list) -> list:
        """This rank's share of `items`, round-robin (items[rank::world_size])."""
        return items[self.rank :: self.world_size] if self.is_distributed else items

    def gather(self, items: list) -> list:
        """Every rank's `items`, concatenated in rank order, on every rank."""
        if not self.is_distributed:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)

    def split_batch(self, batch_ids: list[int], label_tokens: list[int]) -> tuple[list[int], float]:
        """This rank's contiguous slice of a global batch and its weight n_r / N, n = label tokens.
        Backpropagating `mean_loss_r * weight` on every rank and summing gradients gives the gradient
        of the global batch's token mean, which is what one process computes."""
        if not self.is_distributed:
            return batch_ids, 1.0
        start, end = slice_bounds(len(batch_ids), self.world_size)[self.rank]
        if start == end:  # a short last batch: run one example at weight 0, so every rank joins the all-reduce
            return batch_ids[:1], 0.0
        return batch_ids[start:end], sum(label_tokens[start:end]) / sum(label_tokens)

    # ------------------------------------------------------------------ tensors
    def sync_gradients(self, params: list[torch.nn.Parameter], weighted_loss: float) -> float:
        """All-reduce (sum) the grads of `params` and this rank's weighted loss in one flat buffer;
        returns the global loss (non-finite on every rank if it is on any)."""
        if not self.is_distributed:
            return weighted_loss
        from accelerate.utils import reduce

        device = params[0].device
        parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
        flat = torch.cat(parts + [torch.tensor([weighted_loss], dtype=parts[0].dtype, device=device)])  # (P + 1,)
        flat = reduce(flat, reduction="sum")
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n
        return float(flat[-1])

    def broadcast_parameters(self, params: list[torch.nn.Parameter]) -> None:
        """Copy the main process's values of `params` to every rank."""
        if not self.is_distributed or not params:
            return
        from accelerate.utils import broadcast

        with torch.no_grad():
            flat = broadcast(torch.cat([p.detach().reshape(-1) for p in params]), from_process=0)
            offset = 0
            for p in params:
                p.copy_(flat[offset : offset + p.numel()].view_as(p))
                offset += p.numel()

    def reseed_dropout(self, seed: int, step: int) -> None:
        """Ranks > 0: a torch generator of their own, a function of (seed, rank, step); rank 0 keeps its stream."""
        if self.is_distributed and not self.is_main:
            torch.manual_seed((seed * 1_000_003 + self.rank * 7_919 + step) % 2**63)

    def close(self) -> None:
        """Wait for every rank, then tear the process group down (quiet exit)."""
        if self.is_distributed:
            self._state.wait_for_everyone()
            self._state.destroy_process_group()


def slice_bounds(n: int, world_size: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) of n items for each rank; the first n % world_size ranks get one more."""
    base, extra = divmod(n, world_size)
    bounds, start = [], 0
    for rank in range(world_size):
        end = start + base + (1 if rank < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


_CURRENT = Distributed()


def current() -> Distributed:
    """This process's `Distributed` (single process until `setup` says otherwise)."""
    return _CURRENT


def setup(device: torch.device, mixed_precision: str = "no") -> Distributed:
    """Join the launcher's process group (if it started several) and set `current()`.
    `device` is the single-process choice (`train.device`); under several processes each rank
    takes Accelerate's device for it (cuda:LOCAL_RANK, or cpu when `device` is cpu or no GPU)."""
    global _CURRENT
    if mixed_precision not in MIXED_PRECISION:
        from codecl.errors import ConfigError

        raise ConfigError(f"train.mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {mixed_precision!r}")
    world = launched_world_size()
    notes = _launch_notes(world, mixed_precision)
    if world == 1 and mixed_precision == "no":
        _CURRENT = Distributed(device=device, notes=notes)
        return _CURRENT
    from accelerate import Accelerator, PartialState

    cpu = device.type == "cpu"
    accelerator = Accelerator(cpu=cpu, mixed_precision=mixed_precision) if mixed_precision != "no" else None
    state = PartialState(cpu=cpu)
    rank_device = state.device if world > 1 else device
    _CURRENT = Distributed(state.process_index, state.num_processes, rank_device, mixed_precision, notes, state, accelerator)
    return _CURRENT


def reset() -> None:
    """Back to a single process (tests)."""
    global _CURRENT
    _CURRENT = Distributed()


def _launch_notes(world: int, mixed_precision: str) -> list[str]:
    notes = []
    if world == 1 and os.environ.get("MASTER_ADDR") and os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        notes.append("accelerate launch --cpu started a single process (without an mpirun hostfile it starts one, "
                     "huggingface/accelerate#2741); for N CPU processes use `torchrun --nproc-per-node N -m codecl run ...` "
                     "or `accelerate launch --multi_gpu --num_processes N -m codecl run ... --set train.device=cpu`")
    launcher_mp = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launcher_mp and launcher_mp != mixed_precision:
        notes.append(f"accelerate launch --mixed_precision {launcher_mp} is not used: codecl takes the precision from "
                     f"train.mixed_precision (now {mixed_precision}, recorded in results.json); "
                     f"pass --set train.mixed_precision={launcher_mp} to change it")
    return notes


def print_notes(dist: Distributed) -> None:
    if dist.is_main:
        for note in dist.notes:
            print(f"codecl: note: {note}", file=sys.stderr)
