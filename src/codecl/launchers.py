"""`launcher: ray` (SPEC `codecl run ... --launcher ray [--ray-address ADDR]`): the grid on Ray.

A study is a grid — methods × seeds × task orders (× sweep points: `codecl.sweep` runs each point as
one such grid) — of independent runs. With `launcher: local` they run one after another in the
`codecl run` process; with `ray` every (method, seed, order) run is a Ray task, scheduled by Ray on
the CPUs and GPUs it has: a local Ray started for the run (and stopped after it), or the cluster at
`ray.address`. `ray.trial_gpus` / `ray.trial_cpus` are each task's resource request; a fraction of a
GPU packs several small runs on one GPU (Ray sets each task's CUDA_VISIBLE_DEVICES).

What is computed once, by the driver, before any task starts: the cached corpus and embedded base
(in the user cache), every task's data, stage 0 (the base model's scores: `stage0.json` and
`predictions/base/`) and the router (`router.safetensors`). Each task loads them from the shared
cache and run folder — never recomputes them — trains and evaluates its run, and merges each finished
stage into `results.json` under a file lock (`codecl.results.commit_run`). The run folder is the
same as with `launcher: local`, so `--resume`, `codecl report` and everything else read it alike.
On a cluster, the run folder and the cache (`CODECL_CACHE`) must be on a filesystem every node
mounts, and codecl must be installed on every node.

A task that fails does not stop the others (their stages are kept); when all have ended, the first
failure is raised with its own exit code (e.g. 5 for a diverged run), and `--resume` reruns only
what is missing.
"""
from __future__ import annotations

import os
import sys

from codecl.errors import CodeclError, ConfigError

__all__ = ["check_ray", "run_on_ray"]

_INSTALL = "pip install 'codecl[ray]' (or pip install ray)"


def check_ray(cfg) -> None:
    """Fail in one line, before any work, when Ray is missing."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError(f"launcher=ray needs the `ray` package, which is not installed: {_INSTALL}; or use --launcher local") from None


def _trial(cfg_dict: dict, method: str, seed: int, order_index: int, order: list[str], threads: int) -> dict:
    """Runs inside a Ray worker: one cell of the grid. Errors come back as data (type, message, exit code)."""
    import torch

    if not cfg_dict.get("train", {}).get("num_threads"):
        torch.set_num_threads(threads)  # a trial gets the CPUs it asked Ray for, not every core of the node
    try:
        from codecl.experiment import run_cell_in_worker

        folder = run_cell_in_worker(cfg_dict, method, seed, order_index, order)
        return {"ok": True, "folder": folder}
    except CodeclError as exc:
        return {"ok": False, "type": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code}
    except Exception as exc:  # anything else: exit 1, with its type
        return {"ok": False, "type": type(exc).__name__, "message": f"{type(exc).__name__}: {exc}", "exit_code": 1}


def _init(cfg) -> bool:
    """Connect to (or start) Ray; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    options = {"include_dashboard": False, "log_to_driver": True, "configure_logging": False}
    env = {"env_vars": {k: v for k, v in os.environ.items() if k.startswith(("CODECL_", "HF_", "TRANSFORMERS_", "TOKENIZERS_"))}}
    try:
        if cfg.ray.address:
            ray.init(address=cfg.ray.address, runtime_env=env, **options)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, object_store_memory=128 * 2**20, runtime_env=env, **options)
    except Exception as exc:
        where = f"the Ray cluster at {cfg.ray.address}" if cfg.ray.address else "a local Ray"
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ConfigError(f"cannot start or reach {where} ({type(exc).__name__}: {first}); check --ray-address, or use --launcher local") from None
    return True


def run_on_ray(cfg, cells: list[tuple[str, int, int, list[str]]], log) -> None:
    """Run every cell as a Ray task; wait for all; raise the first failure (its exit code) at the end."""
    import ray
    from tqdm.auto import tqdm

    from codecl.config import to_dict

    started = _init(cfg)
    try:
        resources = ray.cluster_resources()
        if cfg.ray.trial_gpus > 0 and resources.get("GPU", 0) < cfg.ray.trial_gpus:
            raise ConfigError(f"ray.trial_gpus={cfg.ray.trial_gpus} but the Ray cluster has {resources.get('GPU', 0)} GPU(s); "
                              f"lower --trial-gpus or add GPUs")
        if resources.get("CPU", 0) < cfg.ray.trial_cpus:
            raise ConfigError(f"ray.trial_cpus={cfg.ray.trial_cpus} but the Ray cluster has {resources.get('CPU', 0)} CPU(s); lower --trial-cpus")
        trial = ray.remote(num_cpus=cfg.ray.trial_cpus, num_gpus=cfg.ray.trial_gpus, max_retries=0)(_trial)
        cfg_dict = to_dict(cfg)
        threads = max(1, int(cfg.ray.trial_cpus))
        pending = {trial.remote(cfg_dict, method, seed, k, list(order), threads): (method, seed, k) for method, seed, k, order in cells}
        log({"event": "ray_start", "trials": len(pending), "address": cfg.ray.address, "resources": {k: v for k, v in resources.items()
                                                                                                    if k in ("CPU", "GPU", "memory")},
             "trial_cpus": cfg.ray.trial_cpus, "trial_gpus": cfg.ray.trial_gpus})
        failures = []
        with tqdm(total=len(pending), desc="ray trials", unit="run", disable=not sys.stderr.isatty()) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    method, seed, k = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except Exception as exc:  # the worker died (out of memory, killed node, ...)
                        outcome = {"ok": False, "type": type(exc).__name__, "message": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                                   "exit_code": 1}
                    log({"event": "ray_trial", "method": method, "seed": seed, "order": k, **outcome})
                    if not outcome["ok"]:
                        failures.append((method, seed, k, outcome))
                    bar.update(1)
        if failures:
            method, seed, k, outcome = failures[0]
            error = CodeclError(f"ray trial {method} seed {seed}" + (f" order {k}" if k else "") + f" failed: {outcome['message']}"
                                + (f" ({len(failures) - 1} more failed; see events.jsonl)" if len(failures) > 1 else "")
                                + "; finished stages are kept: fix it and rerun with --resume")
            error.exit_code = outcome["exit_code"]
            raise error
    finally:
        if started:
            ray.shutdown()
