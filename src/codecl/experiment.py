"""`codecl run`: every method over the task sequence, evaluated after every stage, reported.

The continual-learning loop (Avalanche's shape, without the plugin machinery):
for each seed, for each method: a fresh frozen base; stage 0 scores (shared by all methods);
then for each task: add its modules, train them, save them, evaluate every task.
`results.json` is rewritten atomically after every stage; `--resume` keeps completed stages
(their saved modules are reloaded and verified) and continues with the next one.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from codecl import __version__, distributed
from codecl.checkpoint import remove_checkpoint
from codecl.config import RunConfig, from_dict, to_dict
from codecl.data.batching import EncodedPairs, encode_pairs
from codecl.errors import CheckpointError, ConfigError
from codecl.evaluation.generate import generate_codes, generate_with_flags
from codecl.evaluation.loss import mean_loss, per_example_losses
from codecl.evaluation.metrics import score_with_examples
from codecl.execution.inrun import METRIC as EXEC_METRIC, InRunExecutor
from codecl.fileio import write_text
from codecl.provenance import collect_provenance, data_fingerprint
from codecl.methods.build import build_model
from codecl.methods.continual import ContinualModel
from codecl.methods.registry import METHODS
from codecl.model.base import load_base
from codecl.results import find_run, finalize_run, load_results, new_results, save_results, upsert_run
from codecl.train import seed_everything, train_task

# Provenance that must match for --resume to continue a run (SPEC: refuse and show what differs).
_RESUME_KEYS = ("tasks", "data", "model", "method", "train", "eval")
_RESUME_FREE_TRAIN_KEYS = ("device", "log_every", "checkpoint_every_steps", "num_threads")


@dataclass
class TaskData:
    language: str
    train: EncodedPairs
    eval_sources: list[str]
    eval_references: list[str]
    eval_ids: list[str]
    eval_encoded: EncodedPairs
    """The evaluation pairs encoded as for training: the teacher-forced `loss` is computed on them."""


class EventLog:
    """Append-only JSON lines (`events.jsonl`), and TensorBoard scalars when it is installed."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(path.parent / "tensorboard"))
        except ImportError:
            self._tb = None

    def __call__(self, event: dict) -> None:
        self._fh.write(json.dumps({"time": round(time.time(), 3), **event}) + "\n")
        self._fh.flush()
        if self._tb is not None and event.get("event") == "train_loss":
            self._tb.add_scalar(f"{event['method']}/seed-{event['seed']}/{event['task']}/loss", event["loss"], event["step"])

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()


class NoLog:
    """The event log of a process that writes no files (ranks other than the main one)."""

    def __call__(self, event: dict) -> None:
        pass

    def close(self) -> None:
        pass


def _quiet_transformers() -> None:
    """codecl draws its own progress bars; the per-load "Loading weights" bars are noise here."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name}: CUDA is not available on this machine; use cpu or auto")
    return torch.device(name)


def load_task_data(cfg: RunConfig, tokenizer) -> tuple[dict[str, TaskData], dict]:
    """Every task's training and evaluation data, and the provenance of what was read:
    `{"data_fingerprint": sha256 over every example used, in order}`."""
    from codecl.data.tasks import load_pairs

    tasks, used = {}, []
    for language in cfg.tasks:
        train = load_pairs(cfg.data, language, "train")
        evaluation = load_pairs(cfg.data, language, cfg.eval.split)
        encoded = encode_pairs(tokenizer, [p.source for p in train], [p.target for p in train], cfg.data.max_source_tokens, cfg.data.max_target_tokens)
        sources, references = [p.source for p in evaluation], [p.target for p in evaluation]
        eval_encoded = encode_pairs(tokenizer, sources, references, cfg.data.max_source_tokens, cfg.data.max_target_tokens)
        tasks[language] = TaskData(language, encoded, sources, references, [p.id for p in evaluation], eval_encoded)
        used += [(language, "train", p) for p in train] + [(language, cfg.eval.split, p) for p in evaluation]
    return tasks, {"data_fingerprint": data_fingerprint(used)}


@dataclass
class Evaluation:
    """One stage's evaluation: score rows (one value per task and metric), how many generations
    per task stopped at the token budget, and the predictions lines of every task."""
    rows: dict[str, list]
    truncated: list[int]
    predictions: dict[str, list[dict]]


def evaluate_all(cm: ContinualModel | None, model, tokenizer, tasks: dict[str, TaskData], trained: list[str], cfg: RunConfig,
                 device, progress: bool, desc: str, executor: InRunExecutor | None = None, log=None) -> Evaluation:
    """Score every task: a trained task with its own modules, any other with the latest task's.
    Metrics of SPEC plus `loss` (teacher-forced nats per reference token). With an `executor`
    (benchmarks configured and execution allowed), `pass_at_1` too: null for a task without a benchmark."""
    rows: dict[str, list] = {}
    truncated: list[int] = []
    predictions: dict[str, list[dict]] = {}
    for language, data in tasks.items():
        if cm is not None:
            cm.activate(language if language in trained else (trained[-1] if trained else None))
        outputs = generate_with_flags(model, tokenizer, data.eval_sources, cfg.data.max_source_tokens, cfg.eval, device, progress,
                                      f"{desc} eval {language}")
        hyps = [text for text, _ in outputs]
        scores, examples = score_with_examples(hyps, data.eval_references, language)
        losses = per_example_losses(model, data.eval_encoded, tokenizer.pad_token_id, cfg.eval.batch_size, device)
        scores["loss"] = mean_loss(losses)
        for metric, value in scores.items():
            rows.setdefault(metric, []).append(value)
        cut = sum(flag for _, flag in outputs)
        truncated.append(cut)
        if cut and log is not None:
            log({"event": "generation_truncated", "stage": desc, "task": language, "truncated": cut, "of": len(outputs),
                 "max_new_tokens": cfg.eval.max_new_tokens})
        predictions[language] = [
            {"id": id_, "source": src, "reference": ref, "prediction": hyp, **example, "truncated": flag,
             "loss": round(total / n, 6) if n else None}
            for id_, src, ref, hyp, example, (_, flag), (total, n)
            in zip(data.eval_ids, data.eval_sources, data.eval_references, hyps, examples, outputs, losses)
        ]
        if executor is not None:
            generate = lambda sources: generate_codes(model, tokenizer, sources, cfg.data.max_source_tokens, cfg.eval, device,  # noqa: E731
                                                      progress, f"{desc} exec {language}")
            rows.setdefault(EXEC_METRIC, []).append(executor.pass_at_1(language, generate, stage=desc))
    if any(truncated):
        cuts = ", ".join(f"{t} {n}/{len(tasks[t].eval_sources)}" for t, n in zip(tasks, truncated) if n)
        print(f"warning: {desc}: generation stopped at eval.max_new_tokens={cfg.eval.max_new_tokens} before end-of-sequence for {cuts}; "
              f"those outputs are cut (predictions field `truncated`) — raise eval.max_new_tokens to score whole programs", file=sys.stderr)
    return Evaluation(rows, truncated, predictions)


def write_predictions(folder: Path, evaluation: Evaluation) -> None:
    """`folder/<task>.jsonl`: every evaluated example of one stage (SPEC "Run folder"), atomically."""
    for task, lines in evaluation.predictions.items():
        write_text(folder / f"{task}.jsonl", "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))


def _check_resume(results: dict, cfg: RunConfig, path: Path) -> None:
    saved, now = json.loads(json.dumps(results.get("config", {}))), to_dict(cfg)
    try:  # a run from an older codecl lacks later settings: they read as their defaults (its behaviour)
        saved = to_dict(from_dict(saved))
    except ConfigError:
        pass  # compared as saved: the differences are shown
    for settings in (saved, now):  # how often to log or checkpoint, and where, change no result
        for key in _RESUME_FREE_TRAIN_KEYS:
            settings.get("train", {}).pop(key, None)
    diffs = [f"{k}: {json.dumps(saved.get(k))} -> {json.dumps(now.get(k))}" for k in _RESUME_KEYS if saved.get(k) != now.get(k)]
    if diffs:
        raise ConfigError(f"{path}: cannot resume with a changed configuration ({'; '.join(diffs)}); use another --output-dir")


def run_experiment(cfg: RunConfig, resume: bool = False, progress: bool = True) -> dict:
    out = Path(cfg.output_dir)
    results_path = out / "results.json"
    if results_path.exists() and not resume:
        raise ConfigError(f"{out} already holds a run; continue it with --resume or choose another --output-dir")
    results = load_results(results_path) if resume and results_path.exists() else None
    if results is not None:
        _check_resume(results, cfg, results_path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output folder {out}: {exc.strerror}") from exc
    dist = distributed.setup(pick_device(cfg.train.device), cfg.train.mixed_precision)  # one process: no process group
    progress = progress and dist.is_main
    if dist.is_main:  # several processes: only the main one writes files, the others compute alike
        write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    device = dist.device
    log = EventLog(out / "events.jsonl") if dist.is_main else NoLog()
    from codecl.hardware import check_bf16

    for warning in check_bf16(cfg, device) if dist.is_main else []:  # e.g. bf16 on a CPU without bf16 matrix units
        print(warning, file=sys.stderr)
        log({"event": "warning", "message": warning})
    distributed.print_notes(dist)
    if dist.is_distributed:
        log({"event": "distributed", "processes": dist.world_size, "device": str(device), "mixed_precision": dist.mixed_precision})
    started = time.perf_counter()
    log({"event": "start", "resume": resume, "torch_threads": torch.get_num_threads(), "device": str(device), "codecl_version": __version__})

    _quiet_transformers()
    with dist.main_process_first():  # the main process builds the cached corpus and base; the others then read them
        base, tokenizer, info = load_base(cfg.model, cfg, progress=progress)
    log({"event": "phase", "name": "base_model", "seconds": round(time.perf_counter() - started, 2)})
    if results is not None and results["base_model"].get("fingerprint") != info.fingerprint:
        raise CheckpointError(f"{results_path}: recorded base fingerprint {results['base_model'].get('fingerprint')} "
                              f"differs from the loaded base's {info.fingerprint}; use another --output-dir")
    with dist.main_process_first():
        tasks, data_provenance = load_task_data(cfg, tokenizer)
    if results is None:
        results = new_results(to_dict(cfg), info.as_dict(), list(cfg.tasks))
        results["provenance"] = collect_provenance(cfg, device, data_provenance["data_fingerprint"])
    elif results.get("provenance", {}).get("data_fingerprint") not in (None, data_provenance["data_fingerprint"]):
        raise ConfigError(f"{results_path}: the examples read now (fingerprint {data_provenance['data_fingerprint']}) differ from those the run "
                          f"used ({results['provenance']['data_fingerprint']}): the data changed; use another --output-dir")
    log({"event": "data", **{t: {"train": len(d.train), "eval": len(d.eval_sources), "truncated_sources": d.train.truncated_sources,
                                "truncated_targets": d.train.truncated_targets} for t, d in tasks.items()}})
    executor = InRunExecutor.from_config(cfg, log)  # None without benchmarks, or without the opt-in (logs exec_skipped)

    first = next((run for run in results["runs"] if run["stages"]), None)
    stage0 = {m: [R[0]] for m, R in first["scores"].items()} if first else None
    truncated0 = first.get("truncated_outputs", [[0] * len(tasks)])[0] if first else None
    if stage0 is None or not (out / "predictions" / "base").is_dir():
        mark = time.perf_counter()
        evaluation = evaluate_all(None, base.to(device), tokenizer, tasks, [], cfg, device, progress, "base", executor, log)
        if distributed.current().is_main:
            write_predictions(out / "predictions" / "base", evaluation)
        stage0 = stage0 or {m: [row] for m, row in evaluation.rows.items()}
        truncated0 = truncated0 or evaluation.truncated
        log({"event": "stage0", "scores": {m: R[0] for m, R in stage0.items()}, "truncated": evaluation.truncated,
             "eval_seconds": round(time.perf_counter() - mark, 2)})

    for seed in cfg.seeds:
        for method in cfg.methods:
            run = find_run(results, method, seed) or {"method": method, "seed": seed, "stages": ["base"],
                                                       "scores": json.loads(json.dumps(stage0)), "truncated_outputs": [list(truncated0)]}
            _run_method(cfg, method, seed, run, results, tasks, tokenizer, device, out, log, progress, executor)
    from codecl.report import summary_table, write_report

    mark = time.perf_counter()
    dist.close()  # every rank is done; the main process alone writes the report
    if not dist.is_main:
        return results
    report = write_report(out)
    log({"event": "phase", "name": "report", "seconds": round(time.perf_counter() - mark, 2)})
    log({"event": "done", "seconds": round(time.perf_counter() - started, 2)})
    log.close()
    print(summary_table(results))  # --quiet drops the progress bars, never the summary (SPEC)
    print(f"\nrun folder: {out}\nresults:    {results_path}\nreport:     {report}\nplots:      {out / 'plots'}")
    return results


def _run_method(cfg, method, seed, run, results, tasks, tokenizer, device, out, log, progress, executor=None) -> None:
    base, _, info = load_base(cfg.model, cfg, progress=False)  # a fresh frozen base: PEFT edits modules in place
    cm = build_model(base, method, cfg.method, info).to(device)
    for key in _COST_KEYS:
        run.setdefault(key, {})
    train_data = {t: d.train for t, d in tasks.items()}
    stages = cm.stages(list(cfg.tasks))  # one per task; the joint baseline's single `joint` stage
    for index, stage in enumerate(stages, start=1):
        task, stage_seed = stage.name, seed * 1000 + index
        folder = out / method / f"seed-{seed}" / task
        if task in run["stages"]:  # completed before an interruption: reload, verify, skip
            cm.load_task(task, folder)
            cm.to(device)
            cm.end_stage(stage, train_data, tokenizer.pad_token_id, device, stage_seed, cfg.train.batch_size)
            continue
        if index == 1 and _reuse_first_stage(cm, method, seed, task, run, results, out, device, log):
            cm.end_stage(stage, train_data, tokenizer.pad_token_id, device, stage_seed, cfg.train.batch_size)
            continue
        seed_everything(stage_seed)  # per stage, before new modules are initialised: resumable bit for bit
        cm.add_task(task)
        cm.to(device)
        cm.activate(task)
        desc = f"{method} seed-{seed} {index}/{len(stages)} {task}"
        cost = train_task(cm, cm.training_data(stage, train_data, seed), cfg.train, tokenizer.pad_token_id, device, stage_seed,
                          log=lambda e: log({"method": method, "seed": seed, "task": task, **e}), progress=progress, desc=desc,
                          checkpoint_dir=folder.with_name(f"{task}.checkpoint"), regularizer=cm.regularizer())
        if distributed.current().is_main:  # several processes: every rank holds the same modules; one writes them
            cm.save_task(task, folder, extra={"seed": seed, "stage": index})
            remove_checkpoint(folder.with_name(f"{task}.checkpoint"))  # the stage's modules are sealed: the checkpoint is spent
        cm.end_stage(stage, train_data, tokenizer.pad_token_id, device, stage_seed, cfg.train.batch_size)  # e.g. EWC's Fisher
        mark = time.perf_counter()
        evaluation = evaluate_all(cm, cm, tokenizer, tasks, [s.name for s in stages[:index]], cfg, device, progress, desc, executor, log)
        rows = evaluation.rows
        eval_seconds = time.perf_counter() - mark
        if distributed.current().is_main:  # before results.json names the stage: a listed stage always has its predictions
            write_predictions(out / method / f"seed-{seed}" / "predictions" / task, evaluation)
        run["stages"].append(task)
        for metric, row in rows.items():
            run["scores"].setdefault(metric, []).append(row)
        run.setdefault("truncated_outputs", []).append(evaluation.truncated)
        run["trainable_parameters"][task] = cost.trainable_parameters
        run["train_seconds"][task] = round(cost.seconds, 3)
        run["train_samples_per_second"][task] = round(cost.samples_per_second, 3)
        run["peak_memory_bytes"][task] = cost.peak_memory_bytes
        run["peak_memory_above_start_bytes"][task] = cost.peak_memory_above_start_bytes
        run["loss_curve"][task] = cost.loss_curve
        run["stored_parameters"] = cm.stored_parameter_count()
        finalize_run(run)
        upsert_run(results, run)
        if distributed.current().is_main:
            save_results(out / "results.json", results)
        log({"event": "stage", "method": method, "seed": seed, "task": task, "seconds": cost.seconds, "eval_seconds": round(eval_seconds, 2),
             "samples_per_second": cost.samples_per_second, "peak_memory_bytes": cost.peak_memory_bytes,
             "peak_memory_above_start_bytes": cost.peak_memory_above_start_bytes, "scores": {m: r for m, r in rows.items()},
             "truncated": evaluation.truncated})
    if "stored_parameters" not in run:
        run["stored_parameters"] = cm.stored_parameter_count()


_COST_KEYS = ("trainable_parameters", "train_seconds", "train_samples_per_second", "peak_memory_bytes", "peak_memory_above_start_bytes",
              "loss_curve")


def _reuse_first_stage(cm, method, seed, task, run, results, out, device, log) -> bool:
    """Take the first stage from the method that trains it identically (`MethodSpec.first_stage_as`:
    same modules, initialisation, seed and data, so the same weights and scores bit for bit) when this
    run already holds it; its modules are saved again as this method's. False: train it as usual."""
    twin = METHODS.get(method).first_stage_as
    twin_run = find_run(results, twin, seed) if twin else None
    twin_folder = out / str(twin) / f"seed-{seed}" / task
    if twin_run is None or task not in twin_run["stages"] or not (twin_folder / "manifest.json").is_file():
        return False
    cm.load_task(task, twin_folder, saved_by=twin)
    cm.to(device)
    folder = out / method / f"seed-{seed}" / task
    if distributed.current().is_main:
        cm.save_task(task, folder, extra={"seed": seed, "stage": 1, "reused_from": twin})
        remove_checkpoint(folder.with_name(f"{task}.checkpoint"))
    stage = twin_run["stages"].index(task)
    if distributed.current().is_main:  # the same model scored the same examples: the same predictions
        for lines in sorted((out / str(twin) / f"seed-{seed}" / "predictions" / task).glob("*.jsonl")):
            write_text(out / method / f"seed-{seed}" / "predictions" / task / lines.name, lines.read_text(encoding="utf-8"))
    run["stages"].append(task)
    for metric, rows in twin_run["scores"].items():
        run["scores"].setdefault(metric, []).append(json.loads(json.dumps(rows[stage])))
    if "truncated_outputs" in twin_run:
        run.setdefault("truncated_outputs", []).append(list(twin_run["truncated_outputs"][stage]))
    for key in _COST_KEYS:
        if task in twin_run.get(key, {}):
            run[key][task] = json.loads(json.dumps(twin_run[key][task]))
    run.setdefault("reused_stages", {})[task] = twin
    run["stored_parameters"] = cm.stored_parameter_count()
    finalize_run(run)
    upsert_run(results, run)
    if distributed.current().is_main:
        save_results(out / "results.json", results)
    log({"event": "stage_reused", "method": method, "seed": seed, "task": task, "from": twin})
    return True
