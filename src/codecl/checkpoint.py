"""Mid-stage training checkpoints: everything needed to continue a stage bit for bit.

A checkpoint folder holds the task's trainable weights and the AdamW state (safetensors, no
pickle), the RNG states of python/numpy/torch, the data position (epoch, batch) and the step
counters (`state.json`), and a `manifest.json` (sha256 per file) written last. It is written
into a temporary sibling folder and swapped in with renames, so a kill at any instant leaves
either the previous checkpoint or the new one, never a torn one.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from codecl.errors import CheckpointError
from codecl.fileio import atomic_write, read_json, verify_manifest, write_json, write_manifest

STATE_VERSION = 1


def _rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    py_version, py_internal, py_gauss = random.getstate()
    np_state = np.random.get_state()
    meta = {"python": [py_version, list(py_internal), py_gauss],
            "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy_keys": torch.from_numpy(np_state[1].astype(np.int64))}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    return meta, tensors


def _set_rng_state(meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng.numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(folder: Path, named_params: list[tuple[str, torch.nn.Parameter]], optimizer: torch.optim.Optimizer,
                    position: dict) -> None:
    """Write a checkpoint of the active stage to `folder` (swapped in atomically)."""
    folder = Path(folder)
    staging, previous = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    weights = {name: p.detach().cpu().contiguous() for name, p in named_params}
    atomic_write(staging / "trainable.safetensors", lambda tmp: save_file(weights, tmp))
    optim, steps = {}, {}
    index = {id(p): i for i, (_, p) in enumerate(named_params)}
    for p, state in optimizer.state.items():
        i = index[id(p)]
        for key, value in state.items():
            if key == "step":
                steps[str(i)] = float(value)
            else:
                optim[f"{i}.{key}"] = value.detach().cpu().contiguous()
    rng_meta, rng_tensors = _rng_state()
    atomic_write(staging / "optimizer.safetensors", lambda tmp: save_file({**optim, **rng_tensors}, tmp))
    write_json(staging / "state.json", {"version": STATE_VERSION, "names": [n for n, _ in named_params], "adam_steps": steps,
                                        "rng": rng_meta, **position})
    write_manifest(staging)
    if folder.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(folder, previous)
    os.replace(staging, folder)
    shutil.rmtree(previous, ignore_errors=True)


def find_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint: `folder`, or `folder.old` if a swap was interrupted."""
    folder = Path(folder)
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / "manifest.json").is_file():
            return candidate
    return None


def load_checkpoint(folder: Path, named_params: list[tuple[str, torch.nn.Parameter]], optimizer: torch.optim.Optimizer) -> dict:
    """Restore weights, optimizer and RNG states; return the saved position (epoch, batch, step, ...)."""
    from safetensors.torch import load_file

    verify_manifest(folder)
    state = read_json(folder / "state.json")
    names = [n for n, _ in named_params]
    if state.get("names") != names:
        raise CheckpointError(f"{folder / 'state.json'}: holds parameters of another module layout; delete {folder} to restart the stage")
    try:
        weights = load_file(str(folder / "trainable.safetensors"))
        tensors = load_file(str(folder / "optimizer.safetensors"))
    except Exception as exc:  # safetensors raises its own error types for torn files
        raise CheckpointError(f"{folder}: unreadable checkpoint tensors ({exc})") from exc
    with torch.no_grad():
        for name, p in named_params:
            p.copy_(weights[name].to(p.device))
    for i, (_, p) in enumerate(named_params):
        keys = [k for k in tensors if k.startswith(f"{i}.")]
        if keys:
            device_state = {k.split(".", 1)[1]: tensors[k].to(p.device) for k in keys}
            device_state["step"] = torch.tensor(state["adam_steps"][str(i)])
            optimizer.state[p] = device_state
    _set_rng_state(state["rng"], {k: v for k, v in tensors.items() if k.startswith("rng.")})
    return {k: v for k, v in state.items() if k not in ("names", "adam_steps", "rng", "version")}


def remove_checkpoint(folder: Path) -> None:
    folder = Path(folder)
    for candidate in (folder, folder.with_name(folder.name + ".old"), folder.with_name(folder.name + ".tmp")):
        shutil.rmtree(candidate, ignore_errors=True)

