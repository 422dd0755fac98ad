"""`results.json` (schema_version 1, SPEC "results.json"): build, update, validate, save, load.

One file per run folder holds the resolved config, the base model's identity, the task order
and one entry per (method, seed). Each run carries its score matrices `scores[metric][stage][task]`
and the summaries `forgetting`/`bwt`/`fwt`/`final_average`, which `finalize_run` recomputes from
the scores (`codecl.evaluation.continual`) so they can never disagree with them.
It is rewritten atomically after every stage, so an interrupted run is read back with only the
stages it completed.

`save_results` adds an optional top-level `summary` (beyond SPEC's schema, which it leaves intact):
per method, mean and 95% Student-t interval over seeds of every score cell and summary figure;
paired t-tests between methods on final average BLEU; the verdicts on the study's claims
(`codecl.evaluation.summary`). It is recomputed from `runs` on every save; readers never trust it.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from codecl import __version__
from codecl.errors import CheckpointError
from codecl.evaluation import continual
from codecl.evaluation.summary import summarize
from codecl.fileio import read_json, write_json
from codecl.registry import JOINT_STAGE  # the joint baseline's one stage; re-exported here as before
from codecl.orders import orders_from_config, run_folder_name, run_key

SCHEMA_VERSION = 1
REQUIRED_METRICS = ("bleu", "exact_match", "syntax_pass")
NON_NULL_METRICS = ("bleu", "exact_match")
"""Required metrics that are never null. `syntax_pass` is null on a task whose outputs are not code
(a code → description task of the user's own data, `codecl.data.usertasks`)."""
"""Metrics every run scores on every task and stage; others (e.g. `bleu_sentence_smoothed`,
`pass_at_1`) are optional and may hold `null` cells. codecl always writes `loss` too (runs made
before it existed lack it, so a reader does not require it)."""
UNBOUNDED_METRICS = ("loss",)
"""Scores not on the 0–1 scale: `loss` is nats per token (>= 0, lower is better), never null."""
FORGETTING_METRIC = "bleu"
PER_TASK_FIELDS = ("trainable_parameters", "train_seconds", "train_samples_per_second", "peak_memory_bytes", "peak_memory_above_start_bytes")
_NULLABLE_PER_TASK = ("train_samples_per_second", "peak_memory_bytes", "peak_memory_above_start_bytes")
_TOLERANCE = 1e-9

__all__ = [
    "SCHEMA_VERSION", "REQUIRED_METRICS", "new_results", "upsert_run", "find_run", "finalize_run",
    "is_complete", "is_joint", "JOINT_STAGE", "validate_results", "validate_run_dir", "save_results", "load_results",
]


def new_results(config_dict: dict, base_model_info: dict, tasks: list[str]) -> dict:
    """An empty results document: provenance (schema, package version, config, base model) and no runs."""
    return {
        "schema_version": SCHEMA_VERSION,
        "codecl_version": __version__,
        "config": config_dict,
        "base_model": dict(base_model_info),
        "tasks": list(tasks),
        "runs": [],
    }


def find_run(results: dict, method: str, seed: int, order_index: int = 0) -> Optional[dict]:
    """The run of `method` with `seed` on task order `order_index` (`codecl.orders`), or None."""
    return next((r for r in results["runs"] if run_key(r) == (method, seed, order_index)), None)


def upsert_run(results: dict, run_dict: dict) -> dict:
    """Replace the run with the same (method, seed, order) in place, or append it; returns `results`."""
    for i, run in enumerate(results["runs"]):
        if run_key(run) == run_key(run_dict):
            results["runs"][i] = run_dict
            return results
    results["runs"].append(run_dict)
    return results


def run_order(run: dict, tasks: list[str]) -> list[str]:
    """The task names in the order the run trains them (`order`; the top-level `tasks` when absent)."""
    return list(run.get("order") or tasks)


def training_order_matrix(R: list, run: dict, tasks: list[str]) -> list:
    """`R` with its columns (top-level task order) rearranged into the run's training order, so that
    column j is the task trained at stage j + 1, as `codecl.evaluation.continual` reads it."""
    order = run_order(run, tasks)
    if order == list(tasks):
        return R
    columns = [tasks.index(t) for t in order]
    return [[row[c] for c in columns] for row in R]


def _summaries(run: dict, tasks: list[str] | None = None) -> dict:
    """forgetting (on bleu) and bwt / fwt / final_average per metric, from `run["scores"]` (a run on
    another task order than `tasks` is read in its own training order)."""
    tasks = list(tasks) if tasks is not None else run_order(run, [])
    trained = list(run["stages"][1:])
    scores = {m: training_order_matrix(R, run, tasks) if tasks else R for m, R in run["scores"].items()}
    return {
        "forgetting": continual.forgetting(scores[FORGETTING_METRIC], trained),
        "bwt": {m: continual.bwt(R) for m, R in scores.items()},
        "fwt": {m: continual.fwt(R) for m, R in scores.items()},
        "final_average": {m: continual.final_average(R) for m, R in scores.items()},
    }


def finalize_run(run: dict, tasks: list[str] | None = None) -> dict:
    """Recompute `forgetting`, `bwt`, `fwt` and `final_average` from `scores` (in place); returns `run`.
    `tasks`: the top-level task order of the score columns (needed when the run has another `order`)."""
    run.update(_summaries(run, tasks))
    if "routed_scores" in run:
        routed = {m: training_order_matrix(R, run, tasks) if tasks else R for m, R in run["routed_scores"].items()}
        run["routed_final_average"] = {m: continual.final_average(R) for m, R in routed.items()}
        run["routed_bwt"] = {m: continual.bwt(R) for m, R in routed.items()}
    return run


def is_joint(run: dict) -> bool:
    """True for a run of the joint baseline (stages `base`, then `joint`)."""
    return run["stages"][1:2] == [JOINT_STAGE]


def is_complete(results: dict, run: dict) -> bool:
    """True when the run trained every task (it has `len(tasks) + 1` stages, or is a finished joint run)."""
    return len(run["stages"]) == len(results["tasks"]) + 1 or run["stages"] == ["base", JOINT_STAGE]


def run_path(run_dir: str | os.PathLike, run: dict) -> Path:
    """`<run_dir>/<method>/seed-<N>[-order-<k>]`: where a run keeps its modules and predictions."""
    return Path(run_dir) / run["method"] / run_folder_name(run["seed"], int(run.get("order_index", 0)))


# ---------------------------------------------------------------- validation


class _Invalid(Exception):
    """One structural problem: `field` (dotted path) and what is wrong with it."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")


def _require(ok: bool, field: str, problem: str) -> None:
    if not ok:
        raise _Invalid(field, problem)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_matrix(R: Any, field: str, num_stages: int, num_tasks: int, nullable: bool, bounded: bool = True) -> None:
    _require(isinstance(R, list), field, f"must be a list of rows, got {type(R).__name__}")
    _require(len(R) == num_stages, field, f"has {len(R)} rows but stages has {num_stages}")
    scale = "in [0, 1]" if bounded else ">= 0"
    for s, row in enumerate(R):
        _require(isinstance(row, list) and len(row) == num_tasks, f"{field}[{s}]", f"must be a list of {num_tasks} scores (one per task)")
        for j, v in enumerate(row):
            ok = (v is None and nullable) or (_is_number(v) and 0.0 <= v and (v <= 1.0 or not bounded))
            _require(ok, f"{field}[{s}][{j}]", f"must be a number {scale}{' or null' if nullable else ''}, got {v!r}")


def _check_per_task(run: dict, field: str, key: str, trained: list[str], tasks: list[str]) -> None:
    values = run.get(key)
    _require(isinstance(values, dict), f"{field}.{key}", "must be an object keyed by task")
    missing = [t for t in trained if t not in values]
    _require(not missing, f"{field}.{key}", f"has no entry for trained task(s) {missing}")
    unknown = [t for t in values if t not in tasks]
    _require(not unknown, f"{field}.{key}", f"names unknown task(s) {unknown}")
    for task, v in values.items():
        ok = (v is None and key in _NULLABLE_PER_TASK) or (_is_number(v) and v >= 0)
        _require(ok, f"{field}.{key}.{task}", f"must be a non-negative number, got {v!r}")


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return _is_number(a) and _is_number(b) and abs(a - b) <= _TOLERANCE


def _check_summaries(run: dict, field: str, tasks: list[str]) -> None:
    expected = _summaries(run, tasks)
    for key, want in expected.items():
        stored = run.get(key)
        _require(isinstance(stored, dict), f"{field}.{key}", "is missing (finalize_run computes it from scores)")
        _require(set(stored) == set(want), f"{field}.{key}", f"has keys {sorted(stored)} but the scores define {sorted(want)}")
        for name, value in want.items():
            _require(_close(stored[name], value), f"{field}.{key}.{name}", f"is {stored[name]!r} but the scores give {value!r}")


def _check_run(run: Any, field: str, tasks: list[str]) -> None:
    _require(isinstance(run, dict), field, "must be an object")
    _require(isinstance(run.get("method"), str) and run["method"], f"{field}.method", "must be a method name")
    _require(isinstance(run.get("seed"), int) and not isinstance(run["seed"], bool), f"{field}.seed", f"must be an integer, got {run.get('seed')!r}")
    stages = run.get("stages")
    _require(isinstance(stages, list) and stages[:1] == ["base"], f"{field}.stages", "must be a list starting with \"base\"")
    if "order" in run:
        order = run["order"]
        _require(isinstance(order, list) and sorted(order) == sorted(tasks) and len(order) == len(tasks), f"{field}.order",
                 f"must be a permutation of tasks {tasks}, got {order!r}")
        index = run.get("order_index", 0)
        _require(isinstance(index, int) and not isinstance(index, bool) and index >= 0, f"{field}.order_index", f"must be an integer >= 0, got {index!r}")
    order = run_order(run, tasks)
    _require(stages[1:] == order[: len(stages) - 1] or stages == ["base", JOINT_STAGE], f"{field}.stages",
             f"must be base followed by the tasks in order {order} (or base, {JOINT_STAGE}), got {stages}")
    scores = run.get("scores")
    _require(isinstance(scores, dict), f"{field}.scores", "must be an object keyed by metric")
    missing = [m for m in REQUIRED_METRICS if m not in scores]
    _require(not missing, f"{field}.scores", f"lacks required metric(s) {missing}")
    for metric, R in scores.items():
        _check_matrix(R, f"{field}.scores.{metric}", len(stages), len(tasks),
                      nullable=metric not in NON_NULL_METRICS + UNBOUNDED_METRICS, bounded=metric not in UNBOUNDED_METRICS)
    if "retention" in run:  # eval.retention: pass@1 of general benchmarks after every stage (null: not executed)
        kept = run["retention"]
        _require(isinstance(kept, dict), f"{field}.retention", "must be an object keyed by benchmark name")
        for name, values in kept.items():
            ok = isinstance(values, list) and len(values) == len(stages) and all(v is None or (_is_number(v) and 0 <= v <= 1) for v in values)
            _require(ok, f"{field}.retention.{name}", f"must hold one pass@1 in [0, 1] or null per stage ({len(stages)})")
    if "routed_scores" in run:  # SPEC eval.routing=router: scores without the task id, and how often the router was right
        routed = run["routed_scores"]
        _require(isinstance(routed, dict) and set(routed) <= set(scores), f"{field}.routed_scores", "must be an object keyed by metrics of scores")
        for metric, R in routed.items():
            _check_matrix(R, f"{field}.routed_scores.{metric}", len(stages), len(tasks),
                          nullable=metric not in NON_NULL_METRICS + UNBOUNDED_METRICS, bounded=metric not in UNBOUNDED_METRICS)
        accuracy = run.get("routing_accuracy")
        _require(isinstance(accuracy, list) and len(accuracy) == len(stages), f"{field}.routing_accuracy",
                 f"must hold one value per stage ({len(stages)})")
        for s, v in enumerate(accuracy):
            _require(v is None or (_is_number(v) and 0 <= v <= 1), f"{field}.routing_accuracy[{s}]", f"must be in [0, 1] or null, got {v!r}")
    if "truncated_outputs" in run:  # generations cut at the token budget, per stage and task (counts)
        cut = run["truncated_outputs"]
        _require(isinstance(cut, list) and len(cut) == len(stages), f"{field}.truncated_outputs", f"must hold one row per stage ({len(stages)})")
        for s, row in enumerate(cut):
            ok = isinstance(row, list) and len(row) == len(tasks) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in row)
            _require(ok, f"{field}.truncated_outputs[{s}]", f"must be {len(tasks)} non-negative counts (one per task)")
    trained = stages[1:]
    known = tasks + [JOINT_STAGE] if is_joint(run) else tasks  # per-stage fields are keyed by stage name
    for key in PER_TASK_FIELDS:
        if key == "peak_memory_above_start_bytes" and key not in run:
            continue  # runs made before it was recorded
        _check_per_task(run, field, key, trained, known)
    stored = run.get("stored_parameters")
    _require(isinstance(stored, int) and not isinstance(stored, bool) and stored >= 0, f"{field}.stored_parameters", f"must be a non-negative integer, got {stored!r}")
    curves = run.get("loss_curve", {})
    _require(isinstance(curves, dict) and all(t in known for t in curves), f"{field}.loss_curve", "must be an object keyed by task")
    for task, curve in curves.items():
        ok = isinstance(curve, list) and all(v is None or _is_number(v) or isinstance(v, dict) for v in curve)
        _require(ok, f"{field}.loss_curve.{task}", "must be a list of losses or of {\"step\", \"loss\", ...} points")
    _check_summaries(run, field, tasks)


def _check_document(results: Any, complete: bool) -> None:
    _require(isinstance(results, dict), "(top level)", "must be an object")
    version = results.get("schema_version")
    _require(version == SCHEMA_VERSION, "schema_version", f"is {version!r}; this codecl reads schema_version {SCHEMA_VERSION}")
    for key in ("codecl_version", "config", "base_model", "tasks", "runs"):
        _require(key in results, key, "is missing")
    _require(isinstance(results["config"], dict), "config", "must be an object")
    _require(isinstance(results["base_model"], dict), "base_model", "must be an object")
    tasks = results["tasks"]
    _require(isinstance(tasks, list) and tasks and all(isinstance(t, str) for t in tasks), "tasks", "must be a non-empty list of task names")
    _require(isinstance(results["runs"], list), "runs", "must be a list")
    _require(isinstance(results.get("summary", {}), dict), "summary", "must be an object (save_results recomputes it from runs)")
    if "provenance" in results:
        prov = results["provenance"]
        _require(isinstance(prov, dict), "provenance", "must be an object")
        for key in ("python", "packages", "device", "git_commit", "model_revision", "data_revision", "data_fingerprint"):
            _require(key in prov, f"provenance.{key}", "is missing")
        _require(isinstance(prov["packages"], dict), "provenance.packages", "must be an object of package versions")
    seen = set()
    for i, run in enumerate(results["runs"]):
        _check_run(run, f"runs[{i}]", tasks)
        key = run_key(run)
        _require(key not in seen, f"runs[{i}]", f"repeats method {key[0]!r} seed {key[1]} order {key[2]}")
        seen.add(key)
        _require(not complete or is_complete(results, run), f"runs[{i}].stages",
                 f"has {len(run['stages'])} stages but a finished run has {len(tasks) + 1} (a joint run: 2)")
    if complete:
        cfg = results["config"]
        n_orders = len(orders_from_config(cfg)) if "tasks" in cfg else 1
        wanted = [(m, s, k) for m in cfg.get("methods", []) for s in cfg.get("seeds", []) for k in range(n_orders)]
        absent = [f"{m} seed {s}" + (f" order {k}" if k else "") for m, s, k in wanted if (m, s, k) not in seen]
        _require(not absent, "runs", f"lacks the configured run(s): {', '.join(absent)}")


def validate_results(results: dict, source: str | os.PathLike = "results.json", *, complete: bool = False) -> dict:
    """Check a results document against SPEC; return it, or raise CheckpointError naming
    `source` and the bad field (e.g. "runs[1].scores.bleu has 2 rows but stages has 3").

    Always checked: schema version, keys, task order of every run's stages, matrix shapes
    (stages × tasks) and ranges (required metrics numeric, optional ones may be null), per-task
    fields, and that forgetting / bwt / fwt / final_average equal their recomputation from scores.
    With `complete=True` also: every configured method × seed has a run with every stage.
    """
    try:
        _check_document(results, complete)
    except _Invalid as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    return results


def save_results(path: str | os.PathLike, results: dict) -> Path:
    """Write `results` atomically (temp file, fsync, rename) as indented JSON, with its `summary`
    over seeds recomputed from its runs (`results` itself is left unchanged)."""
    return write_json(path, {**results, "summary": summarize(results)})


@contextmanager
def results_lock(path: str | os.PathLike):
    """An exclusive lock on `<results.json>.lock` (fcntl): runs of one grid in several processes (the Ray
    launcher) read, merge and write results.json one at a time. Local filesystems and NFS honour it."""
    import fcntl

    lock = Path(str(path) + ".lock")
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def commit_run(path: str | os.PathLike, run: dict) -> dict:
    """Merge one run into the results.json at `path` (read, upsert by (method, seed, order), write
    atomically), under `results_lock`; returns the merged document."""
    with results_lock(path):
        results = load_results(path)
        upsert_run(results, run)
        save_results(path, results)
    return results


def load_results(path: str | os.PathLike) -> dict:
    """Read and validate a results.json; CheckpointError naming the file if it is missing,
    corrupted, or breaks the schema."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no results file; is this a codecl run folder (codecl run --output-dir DIR)?")
    try:
        document = read_json(path)
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path}: not UTF-8 text ({exc.reason}); the file is corrupted") from None
    return validate_results(document, path)


def validate_run_dir(run_dir: str | os.PathLike, *, complete: bool = True) -> dict:
    """Check a run folder against SPEC "Run folder"; return its validated results.

    results.json as `validate_results(..., complete=complete)`; config.yaml and report.md
    present; plots/ holding `score_matrix_<method>.png` for every method, `final_scores.png`
    and `score_vs_params.png`; a `<method>/seed-<N>/<task>/` folder for every trained stage; and the
    predictions files of every stage and task (`predictions/base/<task>.jsonl`,
    `<method>/seed-<N>/predictions/<stage>/<task>.jsonl`).
    Raises CheckpointError naming the first missing path.
    """
    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    results = load_results(path)
    validate_results(results, path, complete=complete)
    wanted = [run_dir / "config.yaml", run_dir / "report.md", run_dir / "plots" / "final_scores.png", run_dir / "plots" / "score_vs_params.png"]
    wanted += [run_dir / "plots" / f"score_matrix_{m}.png" for m in dict.fromkeys(r["method"] for r in results["runs"])]
    wanted += [run_path(run_dir, r) / task for r in results["runs"] for task in r["stages"][1:]]
    if results["runs"]:  # SPEC predictions files: stage 0 once, then every stage of every run, every task
        wanted += [run_dir / "predictions" / "base" / f"{t}.jsonl" for t in results["tasks"]]
    wanted += [run_path(run_dir, r) / "predictions" / stage / f"{t}.jsonl"
               for r in results["runs"] for stage in r["stages"][1:] for t in results["tasks"]]
    for item in wanted:
        if not item.exists():
            raise CheckpointError(f"{item}: missing from the run folder {run_dir}")
    return results
