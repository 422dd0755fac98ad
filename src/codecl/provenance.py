"""What produced a number (SPEC `provenance`): library versions, Python, device, code commit,
model and data revisions, and a fingerprint of the examples used.

Recorded once in results.json when a run starts; `--resume` refuses to continue a run whose
examples (their fingerprint) changed since.
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("torch", "transformers", "peft", "datasets", "accelerate", "tokenizers", "safetensors", "sacrebleu", "numpy")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, `None` when it is not installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_name(device: torch.device) -> str:
    """`cpu: <processor>` or the GPU's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    processor = _cpu_model() or platform.processor() or platform.machine()
    return f"cpu: {processor}" if processor else "cpu"


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the checkout codecl runs from (with `+dirty` when it has local changes), or
    None when codecl is installed from a wheel / no git is available."""
    folder = path or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def data_fingerprint(examples) -> str:
    """sha256 over `(task, split, pair)` of every example used, in order: id, source and target."""
    digest = hashlib.sha256()
    for task, split, pair in examples:
        digest.update(json.dumps([task, split, pair.id, pair.source, pair.target], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def plugin_origins(cfg) -> dict[str, str]:
    """Where each method and metric of the run that is not codecl's own came from (entry point, distribution and
    its version): what to install to read the run back."""
    from codecl.registry import METHODS, METRICS

    origins = {}
    for registry, names in ((METHODS, cfg.methods), (METRICS, cfg.eval.metrics)):
        for name in names:
            origin = registry.origin(name)  # "entry point N = module:attr (group G, <distribution> <version>)"
            if origin != "codecl":
                origins[f"{registry.kind} {name}"] = origin
    return origins


def collect_provenance(cfg, device: torch.device, data_fingerprint_: str) -> dict:
    """The `provenance` object of results.json."""
    model_revision = getattr(cfg.model, "revision", None)
    data_revision = getattr(cfg.data, "hub_revision", None) if cfg.data.source == "hub" else None  # local / embedded data: none
    return {
        "python": platform.python_version(),
        "packages": package_versions(PACKAGES + (("codebleu",) if "codebleu" in cfg.eval.metrics else ())),
        "plugins": plugin_origins(cfg),
        "platform": platform.platform(),
        "device": device_name(device),
        "git_commit": git_commit(),
        "model_revision": model_revision if cfg.model.name != "embedded" and not Path(cfg.model.name).is_dir() else None,  # a folder has no revision
        "data_revision": data_revision,
        "data_fingerprint": data_fingerprint_,
    }
