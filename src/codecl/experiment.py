"""`codecl run`: every method over the task sequence, evaluated after every stage, reported.

The continual-learning loop (Avalanche's shape, without the plugin machinery): stage 0 scores
(the base model, shared by all methods, computed once); then one *run* per (method, seed, task
order) — a fresh frozen base; for each task of the order: add its modules, train them, save them,
evaluate every task (with the task id, and with `eval.routing=router` also routed, `codecl.routing`).
Runs are independent: `launcher: local` runs them one after another in this process, `launcher: ray`
as Ray tasks (`codecl.launchers`). Each finished stage is merged into `results.json` under a file
lock and written atomically, so runs in several processes share one results file; `--resume` keeps
completed stages (their saved modules are reloaded and verified) and continues with the next one.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from codecl import __version__, distributed
from codecl.checkpoint import remove_checkpoint
from codecl.config import RunConfig, from_dict, to_dict
from codecl.data.batching import EncodedPairs, encode_pairs
from codecl.data.usertasks import TaskInfo, task_info
from codecl.errors import CheckpointError, ConfigError
from codecl.evaluation.generate import generate_codes, generate_with_flags
from codecl.evaluation.loss import mean_loss, per_example_losses
from codecl.evaluation.metrics import score_with_examples
from codecl.execution.inrun import METRIC as EXEC_METRIC, InRunExecutor
from codecl.fileio import write_text
from codecl.hardware import pick_device  # also codecl.experiment.pick_device, as before
from codecl.provenance import collect_provenance, data_fingerprint
from codecl.methods.build import build_model, routes_by_task
from codecl.methods.continual import ContinualModel
from codecl.registry import METHODS, check_metrics_installed
from codecl.model.base import load_base
from codecl.orders import run_folder_name, task_orders
from codecl.results import commit_run, find_run, finalize_run, load_results, new_results, run_path, save_results
from codecl.routing import ROUTER_FILE, Router, embed_rows, input_rows
from codecl.train import seed_everything, train_task

# Provenance that must match for --resume to continue a run (SPEC: refuse and show what differs).
_RESUME_KEYS = ("tasks", "data", "model", "method", "train", "eval", "orders", "task_orders")
_RESUME_FREE_TRAIN_KEYS = ("device", "log_every", "checkpoint_every_steps", "num_threads")


@dataclass
class TaskData:
    name: str
    info: TaskInfo
    """The task's language (syntax checks, execution) and direction (`codecl.data.usertasks`)."""
    train: EncodedPairs
    eval_sources: list[str]
    eval_references: list[str]
    eval_ids: list[str]
    eval_encoded: EncodedPairs
    """The evaluation pairs encoded as for training: the teacher-forced `loss` is computed on them."""
    eval_features: object = None
    """With eval.routing=router: the router's features of every evaluation input (N, d)."""

    @property
    def language(self) -> str:
        return self.info.language


class EventLog:
    """Append-only JSON lines (`events.jsonl`); every event also goes to the run's trackers
    (`track.report_to`, `codecl.tracking.Trackers`), if any."""

    def __init__(self, path: Path, trackers=None):
        self.path = path
        self.trackers = trackers
        self._fh = open(path, "a", encoding="utf-8")

    def __call__(self, event: dict) -> None:
        self._fh.write(json.dumps({"time": round(time.time(), 3), **event}) + "\n")
        self._fh.flush()
        if self.trackers is not None:
            self.trackers(event)

    def close(self) -> None:
        self._fh.close()
        if self.trackers is not None:
            self.trackers.close()


class NoLog:
    """The event log of a process that writes no files (ranks other than the main one)."""

    trackers = None

    def __call__(self, event: dict) -> None:
        pass

    def close(self) -> None:
        pass


def _quiet_transformers() -> None:
    """codecl draws its own progress bars; the per-load "Loading weights" bars are noise here."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def load_task_data(cfg: RunConfig, tokenizer) -> tuple[dict[str, TaskData], dict]:
    """Every task's training and evaluation data, and the provenance of what was read:
    `{"data_fingerprint": sha256 over every example used, in order}`."""
    from codecl.data.tasks import load_pairs

    tasks, used = {}, []
    evaluations = {name: load_pairs(cfg.data, name, cfg.eval.split) for name in cfg.tasks}
    for name in cfg.tasks:
        train = load_pairs(cfg.data, name, "train")
        evaluation = evaluations[name]
        others = {p.id for other, pairs in evaluations.items() if other != name for p in pairs}
        if others:  # no task trains on an example another task evaluates (tasks drawn from one corpus share ids)
            kept = [p for p in train if p.id not in others]
            if len(kept) < len(train):
                print(f"note: task {name}: {len(train) - len(kept)} training example(s) left out because another task "
                      f"evaluates them", file=sys.stderr)
            train = kept
        encoded = encode_pairs(tokenizer, [p.source for p in train], [p.target for p in train], cfg.data.max_source_tokens, cfg.data.max_target_tokens)
        sources, references = [p.source for p in evaluation], [p.target for p in evaluation]
        eval_encoded = encode_pairs(tokenizer, sources, references, cfg.data.max_source_tokens, cfg.data.max_target_tokens)
        tasks[name] = TaskData(name, task_info(cfg.data, name), encoded, sources, references, [p.id for p in evaluation], eval_encoded)
        used += [(name, "train", p) for p in train] + [(name, cfg.eval.split, p) for p in evaluation]
    return tasks, {"data_fingerprint": data_fingerprint(used)}


def prepare_router(base, tokenizer, tasks: dict[str, TaskData], device, batch_size: int) -> Router:
    """The router of `codecl.routing`: each task's statistics from its training inputs, and the features
    of every evaluation input (kept on the TaskData), all from the bare frozen base."""
    router = Router()
    pad = tokenizer.pad_token_id
    for name, data in tasks.items():
        router.learn(name, embed_rows(base, input_rows(data.train), pad, device, batch_size))
        data.eval_features = embed_rows(base, input_rows(data.eval_encoded), pad, device, batch_size)
    return router


@dataclass
class Evaluation:
    """One stage's evaluation: score rows (one value per task and metric), how many generations
    per task stopped at the token budget, and the predictions lines of every task."""
    rows: dict[str, list]
    truncated: list[int]
    predictions: dict[str, list[dict]]
    losses: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    """Per task, every example's (summed nats, label tokens)."""
    routed_rows: dict[str, list] = field(default_factory=dict)
    routing_accuracy: float | None = None


def _oracle_module(task: str, trained: list[str]) -> str | None:
    """The modules the study evaluates `task` with: its own once trained, else the latest task's."""
    return task if task in trained else (trained[-1] if trained else None)


def _task_scores(hyps: list[str], data: TaskData, losses: list[tuple[float, int]], metrics: tuple[str, ...]) -> tuple[dict, list[dict]]:
    language = data.info.language if data.info.output_is_code else None  # text outputs have no syntax to check
    scores, examples = score_with_examples(hyps, data.eval_references, language, metrics)  # eval.metrics, via codecl.registry.METRICS
    scores["loss"] = mean_loss(losses)
    return scores, examples


def evaluate_all(cm: ContinualModel | None, model, tokenizer, tasks: dict[str, TaskData], trained: list[str], cfg: RunConfig,
                 device, progress: bool, desc: str, executor: InRunExecutor | None = None, log=None) -> Evaluation:
    """Score every task: a trained task with its own modules, any other with the latest task's.
    The metrics of `eval.metrics` (SPEC's by default) plus `loss` (teacher-forced nats per reference token). With an `executor`
    (benchmarks configured and execution allowed), `pass_at_1` too: null for a task without a benchmark."""
    rows: dict[str, list] = {}
    truncated: list[int] = []
    predictions: dict[str, list[dict]] = {}
    example_losses: dict[str, list[tuple[float, int]]] = {}
    for name, data in tasks.items():
        if cm is not None:
            cm.activate(_oracle_module(name, trained))
        outputs = generate_with_flags(model, tokenizer, data.eval_sources, cfg.data.max_source_tokens, cfg.eval, device, progress,
                                      f"{desc} eval {name}")
        hyps = [text for text, _ in outputs]
        losses = per_example_losses(model, data.eval_encoded, tokenizer.pad_token_id, cfg.eval.batch_size, device)
        scores, examples = _task_scores(hyps, data, losses, cfg.eval.metrics)
        example_losses[name] = losses
        for metric, value in scores.items():
            rows.setdefault(metric, []).append(value)
        cut = sum(flag for _, flag in outputs)
        truncated.append(cut)
        if cut and log is not None:
            log({"event": "generation_truncated", "stage": desc, "task": name, "truncated": cut, "of": len(outputs),
                 "max_new_tokens": cfg.eval.max_new_tokens})
        predictions[name] = [
            {"id": id_, "source": src, "reference": ref, "prediction": hyp, **example, "truncated": flag,
             "loss": round(total / n, 6) if n else None}
            for id_, src, ref, hyp, example, (_, flag), (total, n)
            in zip(data.eval_ids, data.eval_sources, data.eval_references, hyps, examples, outputs, losses)
        ]
        if executor is not None:
            generate = lambda sources: generate_codes(model, tokenizer, sources, cfg.data.max_source_tokens, cfg.eval, device,  # noqa: E731
                                                      progress, f"{desc} exec {name}")
            rows.setdefault(EXEC_METRIC, []).append(executor.pass_at_1(name, generate, stage=desc))
    if any(truncated):
        cuts = ", ".join(f"{t} {n}/{len(tasks[t].eval_sources)}" for t, n in zip(tasks, truncated) if n)
        print(f"warning: {desc}: generation stopped at eval.max_new_tokens={cfg.eval.max_new_tokens} before end-of-sequence for {cuts}; "
              f"those outputs are cut (predictions field `truncated`) — raise eval.max_new_tokens to score whole programs", file=sys.stderr)
    return Evaluation(rows, truncated, predictions, example_losses)


def _subset(encoded: EncodedPairs, index: list[int]) -> EncodedPairs:
    return EncodedPairs([encoded.source_ids[i] for i in index], [encoded.target_ids[i] for i in index], 0, 0)


def evaluate_routed(cm, model, tokenizer, tasks: dict[str, TaskData], trained: list[str], learned: list[str], cfg: RunConfig, device,
                    progress: bool, desc: str, oracle: Evaluation, router: Router, by_task: bool) -> None:
    """Add to `oracle` the stage's scores without the task id (`routed_rows`) and the routing accuracy.

    Every evaluation input goes to the modules of the task the router picks among `learned` (the tasks
    trained so far). An input routed to the modules the oracle used for it keeps the oracle's output — the
    same model on the same input; the others are generated and scored again with the modules they were
    routed to. `by_task` False (a method whose model has no task-specific part: shared weights, summed or
    merged adapters): routing changes nothing, the routed scores are the oracle's. Predictions lines gain
    `routed_to`, and `routed_prediction` / `routed_loss` where routing changed the modules."""
    hits = total = 0
    rows: dict[str, list] = {}
    for name, data in tasks.items():
        routes = router.route(data.eval_features, learned)
        if name in learned:
            hits += sum(r == name for r in routes)
            total += len(routes)
        lines = oracle.predictions[name]
        hyps = [line["prediction"] for line in lines]
        losses = list(oracle.losses[name])
        own = _oracle_module(name, trained)
        moved: dict[str, list[int]] = {}
        for i, r in enumerate(routes):
            lines[i]["routed_to"] = r
            module = r if r in trained else own  # the joint baseline's one stage serves every task
            if by_task and module != own:
                moved.setdefault(module, []).append(i)
        for module, index in moved.items():
            cm.activate(module)
            outputs = generate_codes(model, tokenizer, [data.eval_sources[i] for i in index], cfg.data.max_source_tokens, cfg.eval, device,
                                     progress, f"{desc} routed {name}->{module}")
            moved_losses = per_example_losses(model, _subset(data.eval_encoded, index), tokenizer.pad_token_id, cfg.eval.batch_size, device)
            for i, hyp, (nats, n) in zip(index, outputs, moved_losses):
                hyps[i], losses[i] = hyp, (nats, n)
                lines[i]["routed_prediction"], lines[i]["routed_loss"] = hyp, round(nats / n, 6) if n else None
        if not moved:
            scores = {m: oracle.rows[m][list(tasks).index(name)] for m in oracle.rows if m != EXEC_METRIC}
        else:
            scores, _ = _task_scores(hyps, data, losses, cfg.eval.metrics)
        for metric, value in scores.items():
            rows.setdefault(metric, []).append(value)
    oracle.routed_rows = rows
    oracle.routing_accuracy = hits / total if total else None


def _retention_module(language: str, trained: list[str], tasks: dict[str, TaskData]) -> str | None:
    """The modules a retention benchmark of `language` is scored with: the first trained task that writes code of
    that language, else the latest trained task's (the model as it stands); None before any training."""
    own = next((t for t in trained if t in tasks and tasks[t].info.language == language and tasks[t].info.output_is_code), None)
    return own or (trained[-1] if trained else None)


def evaluate_retention(cm, model, tokenizer, tasks: dict[str, TaskData], trained: list[str], cfg: RunConfig, device, progress: bool,
                       desc: str, retention: tuple) -> dict[str, float | None]:
    """pass@1 of every `eval.retention` benchmark for this stage (null when execution is not allowed)."""
    executor, languages = retention
    values = {}
    for name, language in languages.items():
        if executor is None:
            values[name] = None
            continue
        if cm is not None:
            cm.activate(_retention_module(language, trained, tasks))
        generate = lambda sources: generate_codes(model, tokenizer, sources, cfg.data.max_source_tokens, cfg.eval, device,  # noqa: E731
                                                  progress, f"{desc} retention {name}")
        values[name] = executor.pass_at_1(name, generate, stage=desc)
    return values


def write_predictions(folder: Path, evaluation: Evaluation) -> None:
    """`folder/<task>.jsonl`: every evaluated example of one stage (SPEC "Run folder"), atomically."""
    for task, lines in evaluation.predictions.items():
        write_text(folder / f"{task}.jsonl", "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))


def _config_diff(key: str, saved, now) -> str:
    """`key.sub: old -> new` for every setting that differs (sections compared key by key, so a changed
    `eval.metrics` reads as that, not as two copies of the whole `eval` section)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        return "; ".join(_config_diff(f"{key}.{k}", saved.get(k), now.get(k)) for k in dict.fromkeys([*saved, *now])
                         if saved.get(k) != now.get(k))
    return f"{key}: {json.dumps(saved)} -> {json.dumps(now)}"


def _check_resume(results: dict, cfg: RunConfig, path: Path) -> None:
    saved, now = json.loads(json.dumps(results.get("config", {}))), to_dict(cfg)
    try:  # a run from an older codecl lacks later settings: they read as their defaults (its behaviour)
        saved = to_dict(from_dict(saved))
    except ConfigError:
        pass  # compared as saved: the differences are shown
    for settings in (saved, now):  # how often to log or checkpoint, and where, change no result
        for key in _RESUME_FREE_TRAIN_KEYS:
            settings.get("train", {}).pop(key, None)
    diffs = [_config_diff(k, saved.get(k), now.get(k)) for k in _RESUME_KEYS if saved.get(k) != now.get(k)]
    if diffs:
        raise ConfigError(f"{path}: cannot resume with a changed configuration ({'; '.join(diffs)}); use another --output-dir")


STAGE0_FILE = "stage0.json"
"""Stage 0 (the base model's scores, shared by every run), written before any run starts."""


@dataclass
class Context:
    """What every run of one `codecl run` shares: loaded once per process."""
    cfg: RunConfig
    out: Path
    tokenizer: object
    tasks: dict
    device: object
    log: object
    progress: bool
    executor: object
    router: Router | None
    stage0: dict
    retention: tuple = (None, {})
    """`eval.retention`: (its executor or None, benchmark name -> language)."""


def _setup(cfg: RunConfig, progress: bool, resume: bool, tracker_suffix: str | None = None):
    from codecl.tracking import Trackers, check_trackers

    check_trackers(cfg.track)  # every rank, before anything is computed: a missing tracker package is one line
    out = Path(cfg.output_dir)
    dist = distributed.setup(pick_device(cfg.train.device), cfg.train.mixed_precision)  # one process: no process group
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    log = EventLog(out / "events.jsonl", Trackers.from_config(cfg, tracker_suffix)) if dist.is_main else NoLog()
    _quiet_transformers()
    return out, dist, log


def _load_shared(cfg: RunConfig, dist, log, progress: bool, started: float):
    with dist.main_process_first():  # the main process builds the cached corpus and base; the others then read them
        base, tokenizer, info = load_base(cfg.model, cfg, progress=progress)
    log({"event": "phase", "name": "base_model", "seconds": round(time.perf_counter() - started, 2)})
    with dist.main_process_first():
        tasks, data_provenance = load_task_data(cfg, tokenizer)
    router = None
    if cfg.eval.routing == "router":
        mark = time.perf_counter()
        router = prepare_router(base.to(dist.device), tokenizer, tasks, dist.device, cfg.eval.batch_size)
        log({"event": "phase", "name": "router_features", "seconds": round(time.perf_counter() - mark, 2)})
    return base, tokenizer, info, tasks, data_provenance, router


def run_experiment(cfg: RunConfig, resume: bool = False, progress: bool = True) -> dict:
    out = Path(cfg.output_dir)
    results_path = out / "results.json"
    if results_path.exists() and not resume:
        raise ConfigError(f"{out} already holds a run; continue it with --resume or choose another --output-dir")
    results = load_results(results_path) if resume and results_path.exists() else None
    if results is not None:
        _check_resume(results, cfg, results_path)
    check_metrics_installed(cfg.eval.metrics)  # before anything is computed: e.g. codebleu missing is one line, exit 2
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output folder {out}: {exc.strerror}") from exc
    if cfg.launcher == "ray":
        from codecl.launchers import check_ray

        check_ray(cfg)  # before anything is computed: a missing `ray` or a bad address is one line, exit 2
    out, dist, log = _setup(cfg, progress, resume)
    progress = progress and dist.is_main
    if dist.is_main:  # several processes: only the main one writes files, the others compute alike
        write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    device = dist.device
    from codecl.hardware import check_bf16

    for warning in check_bf16(cfg, device) if dist.is_main else []:  # e.g. bf16 on a CPU without bf16 matrix units
        print(warning, file=sys.stderr)
        log({"event": "warning", "message": warning})
    distributed.print_notes(dist)
    if dist.is_distributed:
        log({"event": "distributed", "processes": dist.world_size, "device": str(device), "mixed_precision": dist.mixed_precision})
    started = time.perf_counter()
    log({"event": "start", "resume": resume, "torch_threads": torch.get_num_threads(), "device": str(device), "codecl_version": __version__,
         "launcher": cfg.launcher})

    base, tokenizer, info, tasks, data_provenance, router = _load_shared(cfg, dist, log, progress, started)
    if results is not None and results["base_model"].get("fingerprint") != info.fingerprint:
        raise CheckpointError(f"{results_path}: recorded base fingerprint {results['base_model'].get('fingerprint')} "
                              f"differs from the loaded base's {info.fingerprint}; use another --output-dir")
    if results is None:
        results = new_results(to_dict(cfg), info.as_dict(), list(cfg.tasks))
        results["provenance"] = collect_provenance(cfg, device, data_provenance["data_fingerprint"])
    elif results.get("provenance", {}).get("data_fingerprint") not in (None, data_provenance["data_fingerprint"]):
        raise ConfigError(f"{results_path}: the examples read now (fingerprint {data_provenance['data_fingerprint']}) differ from those the run "
                          f"used ({results['provenance']['data_fingerprint']}): the data changed; use another --output-dir")
    log({"event": "data", **{t: {"train": len(d.train), "eval": len(d.eval_sources), "truncated_sources": d.train.truncated_sources,
                                "truncated_targets": d.train.truncated_targets, "language": d.info.language, "direction": d.info.direction}
                            for t, d in tasks.items()}})
    executor = InRunExecutor.from_config(cfg, log)  # None without benchmarks, or without the opt-in (logs exec_skipped)
    retention = InRunExecutor.for_retention(cfg, log)
    stage0 = _stage0(cfg, out, results, base, tokenizer, tasks, device, progress, executor, log, retention)
    if dist.is_main:
        save_results(results_path, results)  # the run folder exists from here on, with no run yet, or those resumed
        if router is not None:
            router.save(out / ROUTER_FILE, {"base_fingerprint": info.fingerprint, "max_source_tokens": cfg.data.max_source_tokens})
    del base
    ctx = Context(cfg, out, tokenizer, tasks, device, log, progress, executor, router, stage0, retention)
    cells = grid_cells(cfg)
    if cfg.launcher == "ray":
        from codecl.launchers import run_on_ray

        run_on_ray(cfg, cells, log)
    else:
        for method, seed, order_index, order in cells:  # the main process reads results.json; other ranks keep their copy
            run_cell(ctx, method, seed, order_index, order, None if dist.is_main else results)
    from codecl.report import summary_table, write_report

    mark = time.perf_counter()
    dist.close()  # every rank is done; the main process alone writes the report
    if not dist.is_main:
        return results
    results = load_results(results_path)
    report = write_report(out)
    if log.trackers is not None:  # the final summary, report.md and results.json (`codecl.tracking`)
        log.trackers.log_summary(results, out, report)
    log({"event": "phase", "name": "report", "seconds": round(time.perf_counter() - mark, 2)})
    log({"event": "done", "seconds": round(time.perf_counter() - started, 2)})
    log.close()
    print(summary_table(results))  # --quiet drops the progress bars, never the summary (SPEC)
    print(f"\nrun folder: {out}\nresults:    {results_path}\nreport:     {report}\nplots:      {out / 'plots'}")
    return results


def grid_cells(cfg: RunConfig) -> list[tuple[str, int, int, list[str]]]:
    """Every run of the grid: (method, seed, order index, order), seeds outermost, methods innermost (so a
    method that reuses another's first stage finds it done)."""
    orders = task_orders(cfg.tasks, cfg.orders, cfg.task_orders)
    return [(method, seed, k, order) for seed in cfg.seeds for k, order in enumerate(orders) for method in cfg.methods]


def _stage0(cfg, out, results, base, tokenizer, tasks, device, progress, executor, log, retention=(None, {})) -> dict:
    """Stage 0 (the base model on every task; routing has nothing to choose yet): from the saved run when
    resuming, else computed now; written to `stage0.json` and `predictions/base/` for every run to read."""
    saved = out / STAGE0_FILE
    if saved.is_file() and (out / "predictions" / "base").is_dir():
        from codecl.fileio import read_json

        return read_json(saved)
    first = next((run for run in results["runs"] if run["stages"]), None)
    if first is not None and (out / "predictions" / "base").is_dir():
        stage0 = {"scores": {m: [R[0]] for m, R in first["scores"].items()},
                  "truncated_outputs": first.get("truncated_outputs", [[0] * len(tasks)])[:1]}
        if "retention" in first:
            stage0["retention"] = {name: values[:1] for name, values in first["retention"].items()}
    else:
        mark = time.perf_counter()
        evaluation = evaluate_all(None, base.to(device), tokenizer, tasks, [], cfg, device, progress, "base", executor, log)
        if distributed.current().is_main:
            write_predictions(out / "predictions" / "base", evaluation)
        stage0 = {"scores": {m: [row] for m, row in evaluation.rows.items()}, "truncated_outputs": [evaluation.truncated]}
        if retention[1]:
            kept = evaluate_retention(None, base.to(device), tokenizer, tasks, [], cfg, device, progress, "base", retention)
            stage0["retention"] = {name: [value] for name, value in kept.items()}
        log({"event": "stage0", "scores": {m: R[0] for m, R in stage0["scores"].items()}, "truncated": evaluation.truncated,
             "eval_seconds": round(time.perf_counter() - mark, 2)})
    if distributed.current().is_main:
        from codecl.fileio import write_json

        write_json(saved, stage0)
    return stage0


def _new_run(ctx: Context, method: str, seed: int, order_index: int, order: list[str]) -> dict:
    run = {"method": method, "seed": seed, "order": list(order), "order_index": order_index, "stages": ["base"],
           "scores": json.loads(json.dumps(ctx.stage0["scores"])), "truncated_outputs": json.loads(json.dumps(ctx.stage0["truncated_outputs"]))}
    if "retention" in ctx.stage0:
        run["retention"] = json.loads(json.dumps(ctx.stage0["retention"]))
    if ctx.router is not None:
        run["routed_scores"] = {m: json.loads(json.dumps(R)) for m, R in ctx.stage0["scores"].items() if m != EXEC_METRIC}
        run["routing_accuracy"] = [None]  # stage 0: no task has modules to route to
    return run


def run_cell(ctx: Context, method: str, seed: int, order_index: int, order: list[str], results: dict | None = None) -> None:
    """One run of the grid: `method` with `seed` over the tasks in `order`, resumed where results.json has it
    (`results`: an in-memory document instead, for the processes of a multi-process run that write no files)."""
    if results is None:
        results = load_results(ctx.out / "results.json")
    run = find_run(results, method, seed, order_index) or _new_run(ctx, method, seed, order_index, order)
    if run.get("order", list(ctx.cfg.tasks)) != list(order):
        raise ConfigError(f"{ctx.out / 'results.json'}: run {method} seed {seed} order {order_index} trained {run.get('order')}, not {order}; "
                          f"use another --output-dir")
    _run_method(ctx, method, seed, order_index, order, run, results)


def run_cell_in_worker(cfg_dict: dict, method: str, seed: int, order_index: int, order: list[str]) -> str:
    """A run of the grid in a process of its own (a Ray task): loads the cached base and data, the stage 0
    and router the driver saved, then `run_cell`. Returns the run's folder."""
    cfg = from_dict(cfg_dict)
    out, dist, log = _setup(cfg, False, True, f"{method}/{run_folder_name(seed, order_index)}")  # the worker's own tracker run
    base, tokenizer, info, tasks, _, router = _load_shared(cfg, dist, lambda e: None, False, time.perf_counter())
    del base
    from codecl.fileio import read_json

    stage0 = read_json(out / STAGE0_FILE)
    executor = InRunExecutor.from_config(cfg, log)
    ctx = Context(cfg, out, tokenizer, tasks, dist.device, log, False, executor, router, stage0, InRunExecutor.for_retention(cfg, log))
    try:
        run_cell(ctx, method, seed, order_index, order)
    finally:
        log.close()
    return str(out / method / run_folder_name(seed, order_index))


def _run_method(ctx: Context, method, seed, order_index, order, run, results) -> None:
    cfg, out, tasks, tokenizer, device, log, progress, executor = (ctx.cfg, ctx.out, ctx.tasks, ctx.tokenizer, ctx.device, ctx.log,
                                                                    ctx.progress, ctx.executor)
    base, _, info = load_base(cfg.model, cfg, progress=False)  # a fresh frozen base: PEFT edits modules in place
    cm = build_model(base, method, cfg.method, info).to(device)
    for key in _COST_KEYS:
        run.setdefault(key, {})
    home = run_path(out, run)
    train_data = {t: d.train for t, d in tasks.items()}
    stages = cm.stages(list(order))  # one per task; the joint baseline's single `joint` stage
    by_task = routes_by_task(METHODS.get(method), cm)
    tag = f"{method} seed-{seed}" + (f" order-{order_index}" if order_index else "")
    for index, stage in enumerate(stages, start=1):
        task, stage_seed = stage.name, seed * 1000 + index
        folder = home / task
        if task in run["stages"]:  # completed before an interruption: reload, verify, skip
            cm.load_task(task, folder)
            cm.to(device)
            cm.end_stage(stage, train_data, tokenizer.pad_token_id, device, stage_seed, cfg.train.batch_size)
            continue
        if index == 1 and _reuse_first_stage(ctx, cm, method, seed, order_index, task, run, results):
            cm.end_stage(stage, train_data, tokenizer.pad_token_id, device, stage_seed, cfg.train.batch_size)
            continue
        seed_everything(stage_seed)  # per stage, before new modules are initialised: resumable bit for bit
        cm.add_task(task)
        cm.to(device)
        cm.activate(task)
        desc = f"{tag} {index}/{len(stages)} {task}"
        cost = train_task(cm, cm.training_data(stage, train_data, seed), cfg.train, tokenizer.pad_token_id, device, stage_seed,
                          log=lambda e: log({"method": method, "seed": seed, "order": order_index, "task": task, **e}), progress=progress,
                          desc=desc, checkpoint_dir=folder.with_name(f"{task}.checkpoint"), regularizer=cm.regularizer())
        if distributed.current().is_main:  # several processes: every rank holds the same modules; one writes them
            cm.save_task(task, folder, extra={"seed": seed, "stage": index, "order": list(order)})
            remove_checkpoint(folder.with_name(f"{task}.checkpoint"))  # the stage's modules are sealed: the checkpoint is spent
        cm.end_stage(stage, train_data, tokenizer.pad_token_id, device, stage_seed, cfg.train.batch_size)  # e.g. EWC's Fisher
        mark = time.perf_counter()
        trained = [s.name for s in stages[:index]]
        evaluation = evaluate_all(cm, cm, tokenizer, tasks, trained, cfg, device, progress, desc, executor, log)
        if ctx.router is not None:
            learned = [t for s in stages[:index] for t in s.tasks]
            evaluate_routed(cm, cm, tokenizer, tasks, trained, learned, cfg, device, progress, desc, evaluation, ctx.router, by_task)
        if ctx.retention[1]:
            kept = evaluate_retention(cm, cm, tokenizer, tasks, trained, cfg, device, progress, desc, ctx.retention)
            for name, value in kept.items():
                run.setdefault("retention", {}).setdefault(name, []).append(value)
        rows = evaluation.rows
        eval_seconds = time.perf_counter() - mark
        if distributed.current().is_main:  # before results.json names the stage: a listed stage always has its predictions
            write_predictions(home / "predictions" / task, evaluation)
        run["stages"].append(task)
        for metric, row in rows.items():
            run["scores"].setdefault(metric, []).append(row)
        if ctx.router is not None:
            for metric, row in evaluation.routed_rows.items():
                run["routed_scores"].setdefault(metric, []).append(row)
            run["routing_accuracy"].append(evaluation.routing_accuracy)
        run.setdefault("truncated_outputs", []).append(evaluation.truncated)
        run["trainable_parameters"][task] = cost.trainable_parameters
        run["train_seconds"][task] = round(cost.seconds, 3)
        run["train_samples_per_second"][task] = round(cost.samples_per_second, 3)
        run["peak_memory_bytes"][task] = cost.peak_memory_bytes
        run["peak_memory_above_start_bytes"][task] = cost.peak_memory_above_start_bytes
        run["loss_curve"][task] = cost.loss_curve
        run["stored_parameters"] = cm.stored_parameter_count()
        results = _commit(ctx, run, results)
        log({"event": "stage", "method": method, "seed": seed, "order": order_index, "task": task, "stage_index": index, "seconds": cost.seconds,
             "eval_seconds": round(eval_seconds, 2), "samples_per_second": cost.samples_per_second, "peak_memory_bytes": cost.peak_memory_bytes,
             "peak_memory_above_start_bytes": cost.peak_memory_above_start_bytes, "scores": {m: r for m, r in rows.items()},
             "truncated": evaluation.truncated, **({"routing_accuracy": evaluation.routing_accuracy} if ctx.router is not None else {})})
    if "stored_parameters" not in run:
        run["stored_parameters"] = cm.stored_parameter_count()


def _commit(ctx: Context, run: dict, results: dict) -> dict:
    """Merge the run into results.json (under its lock: runs in other processes write it too); returns the
    merged document. Ranks other than the main one keep their copy in memory."""
    finalize_run(run, list(ctx.cfg.tasks))
    if distributed.current().is_main:
        return commit_run(ctx.out / "results.json", run)
    from codecl.results import upsert_run

    return upsert_run(results, run)


_COST_KEYS = ("trainable_parameters", "train_seconds", "train_samples_per_second", "peak_memory_bytes", "peak_memory_above_start_bytes",
              "loss_curve")


def _reuse_first_stage(ctx: Context, cm, method, seed, order_index, task, run, results) -> bool:
    """Take the first stage from the method that trains it identically (`MethodSpec.first_stage_as`:
    same modules, initialisation, seed and data, so the same weights and scores bit for bit) when this
    run already holds it; its modules are saved again as this method's. False: train it as usual."""
    out, device, log = ctx.out, ctx.device, ctx.log
    twin = METHODS.get(method).first_stage_as
    if twin and distributed.current().is_main:
        results = load_results(out / "results.json")  # another process may have finished the twin meanwhile
    twin_run = find_run(results, twin, seed, order_index) if twin else None
    if twin_run is None or task not in twin_run["stages"]:
        return False
    twin_home = run_path(out, twin_run)
    if not (twin_home / task / "manifest.json").is_file():
        return False
    cm.load_task(task, twin_home / task, saved_by=twin)
    cm.to(device)
    home = run_path(out, run)
    folder = home / task
    if distributed.current().is_main:
        cm.save_task(task, folder, extra={"seed": seed, "stage": 1, "reused_from": twin})
        remove_checkpoint(folder.with_name(f"{task}.checkpoint"))
    stage = twin_run["stages"].index(task)
    if distributed.current().is_main:  # the same model scored the same examples: the same predictions
        for lines in sorted((twin_home / "predictions" / task).glob("*.jsonl")):
            write_text(home / "predictions" / task / lines.name, lines.read_text(encoding="utf-8"))
    run["stages"].append(task)
    for metric, rows in twin_run["scores"].items():
        run["scores"].setdefault(metric, []).append(json.loads(json.dumps(rows[stage])))
    for metric, rows in twin_run.get("routed_scores", {}).items():
        run.setdefault("routed_scores", {}).setdefault(metric, []).append(json.loads(json.dumps(rows[stage])))
    if "routing_accuracy" in twin_run and "routing_accuracy" in run:
        run["routing_accuracy"].append(twin_run["routing_accuracy"][stage])
    for name, values in twin_run.get("retention", {}).items():
        run.setdefault("retention", {}).setdefault(name, []).append(values[stage])
    if "truncated_outputs" in twin_run:
        run.setdefault("truncated_outputs", []).append(list(twin_run["truncated_outputs"][stage]))
    for key in _COST_KEYS:
        if task in twin_run.get(key, {}):
            run[key][task] = json.loads(json.dumps(twin_run[key][task]))
    run.setdefault("reused_stages", {})[task] = twin
    run["stored_parameters"] = cm.stored_parameter_count()
    _commit(ctx, run, results)
    log({"event": "stage_reused", "method": method, "seed": seed, "order": order_index, "task": task, "from": twin, "stage_index": 1,
         "scores": {m: R[-1] for m, R in run["scores"].items()}})
    return True
