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

Each finished run prints one line with its final averages; a progress bar (on a terminal) shows the
grid's ETA. A trial that fails with something other than codecl's one-line errors (an exception, a
killed worker) is started again up to `ray.max_retries` times, from its finished stages and
checkpoints; a trial that still fails does not stop the others (their stages are kept): when all
have ended, the run exits non-zero naming every failed run (with the first one's exit code, e.g. 5
for a diverged run), and `--resume` reruns only what is missing.
"""
from __future__ import annotations

import os
import sys

from codecl.errors import CodeclError, ConfigError

__all__ = ["check_ray", "run_on_ray"]


def _headline(cfg, method: str, seed: int, order_index: int) -> str:
    """The finished run's final averages, read back from results.json."""
    from pathlib import Path

    from codecl.results import find_run, load_results

    run = find_run(load_results(Path(cfg.output_dir) / "results.json"), method, seed, order_index)
    if run is None:
        return "no stage recorded"
    final = run.get("final_average", {})
    bleu, loss = final.get("bleu"), final.get("loss")
    return f"final avg BLEU {bleu:.4f}" + (f", loss {loss:.4f}" if loss is not None else "") if bleu is not None else "no score"

_INSTALL = "pip install 'codecl[ray]' (or pip install ray)"


def check_ray(cfg) -> None:
    """Fail in one line, before any work, when Ray is missing."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError(f"launcher=ray needs the `ray` package, which is not installed: {_INSTALL}; or use --launcher local") from None


def _injected_fault(method: str, seed: int, order_index: int) -> None:
    """Fault injection for the launcher's own tests (`CODECL_FAULT_INJECT`, unset in normal use):
    `kill-once:METHOD:SEED:MARKER` ends this worker process abruptly the first time (MARKER, a file path,
    records it), as a killed node does; `fail:METHOD:SEED` raises in every attempt."""
    spec = os.environ.get("CODECL_FAULT_INJECT", "")
    if not spec:
        return
    kind, _, rest = spec.partition(":")
    target, marker = (rest, None) if kind == "fail" else tuple(rest.rsplit(":", 1))
    if target != f"{method}:{seed}" or order_index:
        return
    if kind == "kill-once" and marker and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(137)
    if kind == "fail":
        raise RuntimeError(f"injected failure for {method} seed {seed}")


def _trial(cfg_dict: dict, method: str, seed: int, order_index: int, order: list[str], threads: int) -> dict:
    """Runs inside a Ray worker: one cell of the grid. Errors come back as data (type, message, exit code)."""
    import time

    import torch

    if not cfg_dict.get("train", {}).get("num_threads"):
        torch.set_num_threads(threads)  # a trial gets the CPUs it asked Ray for, not every core of the node
    started = time.perf_counter()
    try:
        from codecl.experiment import run_cell_in_worker

        _injected_fault(method, seed, order_index)
        folder = run_cell_in_worker(cfg_dict, method, seed, order_index, order)
        return {"ok": True, "folder": folder, "seconds": round(time.perf_counter() - started, 2)}
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
        cells_by_key = {(m, s, k): order for m, s, k, order in cells}
        attempts = {key: 1 for key in cells_by_key}

        def submit(key):
            method, seed, k = key
            return trial.remote(cfg_dict, method, seed, k, list(cells_by_key[key]), threads)

        pending = {submit(key): key for key in cells_by_key}
        log({"event": "ray_start", "trials": len(pending), "address": cfg.ray.address, "resources": {k: v for k, v in resources.items()
                                                                                                    if k in ("CPU", "GPU", "memory")},
             "trial_cpus": cfg.ray.trial_cpus, "trial_gpus": cfg.ray.trial_gpus, "max_retries": cfg.ray.max_retries})
        failures, finished = [], 0
        with tqdm(total=len(pending), desc="ray trials", unit="run", disable=not sys.stderr.isatty()) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    key = pending.pop(ref)
                    method, seed, k = key
                    try:
                        outcome = ray.get(ref)
                    except Exception as exc:  # the worker died (killed, out of memory, lost node, ...)
                        outcome = {"ok": False, "type": type(exc).__name__, "exit_code": 1,
                                   "message": f"the worker died ({type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]})"}
                    log({"event": "ray_trial", "method": method, "seed": seed, "order": k, "attempt": attempts[key], **outcome})
                    cell = f"{method} seed {seed}" + (f" order {k}" if k else "")
                    retryable = not outcome["ok"] and outcome["exit_code"] == 1  # codecl's own errors would fail again
                    if retryable and attempts[key] <= cfg.ray.max_retries:
                        attempts[key] += 1
                        bar.write(f"ray: {cell} failed ({outcome['message']}); retrying (attempt {attempts[key]} of "
                                  f"{cfg.ray.max_retries + 1}) from its finished stages", file=sys.stderr)
                        pending[submit(key)] = key
                        continue
                    finished += 1
                    if outcome["ok"]:
                        bar.write(f"[{finished}/{len(cells_by_key)}] {cell}: {_headline(cfg, method, seed, k)} ({outcome['seconds']:.1f} s)")
                    else:
                        failures.append((cell, outcome))
                        bar.write(f"[{finished}/{len(cells_by_key)}] {cell}: FAILED — {outcome['message']}", file=sys.stderr)
                    bar.update(1)
        if failures:
            names = ", ".join(cell for cell, _ in failures)
            cell, outcome = failures[0]
            error = CodeclError(f"{len(failures)} ray trial(s) failed: {names}; first: {cell}: {outcome['message']}; the other "
                                f"runs' stages are kept: fix it and rerun with --resume")
            error.exit_code = outcome["exit_code"]
            raise error
    finally:
        if started:
            ray.shutdown()
