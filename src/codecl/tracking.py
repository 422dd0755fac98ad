"""Experiment trackers (`track.report_to`: tensorboard, mlflow, wandb, trackio) through Accelerate's tracking API.

`Trackers` wraps the tracker classes of `accelerate.tracking` (started and given the resolved config as
`Accelerator.init_trackers` does) and is fed the run's events by `codecl.experiment.EventLog`:

- the resolved config, flattened to dotted keys (`train.lr`, ...), as hyperparameters;
- every `train_loss` as `loss/<method>/seed-<N>[/order-<k>]/<task>` at its training step;
- every stage's score-matrix row as `scores/<method>/seed-<N>[/order-<k>]/<metric>/<task>` at step = the stage
  index (0 = the base model, from `stage0.json`), and the row as a table (W&B table; TensorBoard markdown text);
- at the end (`log_summary`): `summary/<method>/final_average/<metric>` and `summary/<method>/forgetting` (means
  over the method's runs), the same per run, and report.md / results.json as artifacts (MLflow artifacts, a W&B
  artifact, TensorBoard text of the report).

W&B and Trackio want one increasing step per run: they get the values without a step, with the step as a
value (`<key prefix>/step`). With `launcher: ray` every worker logs its own run (named
`<run_name>/<method>/seed-<N>[-order-<k>]`: its losses and score rows) and the driver logs the config and the
summary. A failing tracker call warns once on stderr and never stops the run.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

from codecl.errors import ConfigError

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb", "trackio": "trackio"}
"""The package each tracker needs (`pip install <package>`)."""
_STEPLESS = ("wandb", "trackio")


def is_available(name: str) -> bool:
    return importlib.util.find_spec(PACKAGES[name]) is not None


def check_trackers(track) -> None:
    """One-line ConfigError for trackers whose package is missing (at run start, before anything is computed)."""
    missing = [name for name in track.report_to if not is_available(name)]
    if missing:
        raise ConfigError(f"track.report_to={','.join(track.report_to)}: {', '.join(missing)} not installed; "
                          f"pip install {' '.join(PACKAGES[m] for m in missing)} (or drop it from track.report_to)")


def flatten(data: dict, prefix: str = "") -> dict:
    """Nested config dict -> {dotted key: bool | int | float | str}; lists and None as JSON text."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


def _run_key(event: dict) -> str:
    order = int(event.get("order") or 0)
    return f"{event['method']}/seed-{event['seed']}" + (f"/order-{order}" if order else "")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _build(name: str, run_name: str, project: str, logging_dir: Path):
    from accelerate import tracking

    if name == "tensorboard":
        return tracking.TensorBoardTracker(run_name, str(logging_dir))
    if name == "mlflow":
        import mlflow

        artifacts = None
        if not os.environ.get("MLFLOW_TRACKING_URI"):  # a local store beside the run unless a server is set: SQLite
            # (MLflow >= 3.7 refuses the ./mlruns file store by default), artifacts in <logging_dir>/mlartifacts
            mlflow.set_tracking_uri(f"sqlite:///{(logging_dir / 'mlflow.db').resolve()}")
            artifacts = (logging_dir / "mlartifacts").resolve().as_uri()
        return tracking.MLflowTracker(experiment_name=project, logging_dir=artifacts, run_name=run_name,
                                      nested_run=mlflow.active_run() is not None)
    if name == "wandb":
        return tracking.WandBTracker(project, name=run_name, dir=str(logging_dir))
    return tracking.TrackioTracker(project, name=run_name)


class Trackers:
    """The run's trackers (`track.report_to`), fed `codecl.experiment` events."""

    def __init__(self, cfg, suffix: str | None = None):
        out = Path(cfg.output_dir)
        self.tasks = list(cfg.tasks)
        self.stage0_file = out / "stage0.json"
        self.logging_dir = Path(cfg.track.logging_dir) if cfg.track.logging_dir else out / "trackers"
        self.logging_dir.mkdir(parents=True, exist_ok=True)
        self.run_name = (cfg.track.run_name or out.resolve().name) + (f"/{suffix}" if suffix else "")
        self._stage0: dict | None = None
        self._runs_seen: set[str] = set()
        self._failed: set[str] = set()
        self.trackers = []
        for name in cfg.track.report_to:
            tracker = _build(name, self.run_name, cfg.track.project, self.logging_dir)
            try:
                tracker.start()
            except Exception as exc:
                if suffix is None:  # the run's own process: a tracker that cannot start stops the run before it computes
                    raise
                print(f"warning: track.report_to {name}: could not start the tracker run {self.run_name}: {type(exc).__name__}: {exc}",
                      file=sys.stderr)  # a Ray worker: its run goes on without this tracker
                continue
            self.trackers.append(tracker)
        from codecl.config import to_dict

        self._each(lambda t: t.store_init_configuration(flatten(to_dict(cfg))), "store the config")

    @classmethod
    def from_config(cls, cfg, suffix: str | None = None) -> "Trackers | None":
        check_trackers(cfg.track)
        return cls(cfg, suffix) if cfg.track.report_to else None

    # ------------------------------------------------------------ plumbing

    def _each(self, call, what: str, only: tuple[str, ...] | None = None) -> None:
        for tracker in self.trackers:
            if only is not None and tracker.name not in only:
                continue
            try:
                call(tracker)
            except Exception as exc:  # a tracker's failure never stops a run: one warning per tracker
                if tracker.name not in self._failed:
                    self._failed.add(tracker.name)
                    print(f"warning: track.report_to {tracker.name}: could not {what}: {type(exc).__name__}: {exc}", file=sys.stderr)

    def log(self, values: dict, step: int | None = None, step_key: str | None = None) -> None:
        """Scalars (non-finite and null values dropped) to every tracker; `step_key` names the W&B/Trackio step value."""
        values = {k: float(v) for k, v in values.items() if _number(v)}
        if not values:
            return

        def one(tracker):
            if tracker.name in _STEPLESS and step is not None:
                tracker.log({**values, f"{step_key or 'step'}/step": step})
            else:
                tracker.log(values, step=step)

        self._each(one, "log metrics")

    # ------------------------------------------------------------ events

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "stage0":
            self._stage0 = event.get("scores")
        elif kind == "train_loss" and "method" in event:
            key = f"loss/{_run_key(event)}/{event['task']}"
            self.log({key: event["loss"]}, step=event["step"], step_key=key)
        elif kind in ("stage", "stage_reused") and "scores" in event and "stage_index" in event:
            run = _run_key(event)
            if run not in self._runs_seen:
                self._runs_seen.add(run)
                base = self._base_scores()
                if base:
                    self._log_row(run, base, 0, "base")
            self._log_row(run, event["scores"], int(event["stage_index"]), event["task"])

    def _base_scores(self) -> dict | None:
        if self._stage0 is None and self.stage0_file.is_file():  # a resumed run or a Ray worker: the saved stage 0
            try:
                self._stage0 = {m: R[0] for m, R in json.loads(self.stage0_file.read_text(encoding="utf-8"))["scores"].items()}
            except (OSError, ValueError, KeyError, IndexError):
                self._stage0 = {}
        return self._stage0

    def _log_row(self, run: str, scores: dict, step: int, stage: str) -> None:
        prefix = f"scores/{run}"
        self.log({f"{prefix}/{metric}/{task}": value for metric, row in scores.items() for task, value in zip(self.tasks, row)},
                 step=step, step_key=prefix)
        columns = ["stage", "metric", *self.tasks]
        rows = [[stage, metric, *[v if _number(v) else None for v in row]] for metric, row in scores.items()]
        self._each(lambda t: t.log_table(f"{prefix}/table", columns=columns, data=rows), "log a table", only=("wandb",))
        cell = lambda v: f"{v:.4g}" if _number(v) else "—"  # noqa: E731
        markdown = "\n".join([f"stage {step} ({stage})", "", "| metric | " + " | ".join(self.tasks) + " |",
                              "|---|" + "---|" * len(self.tasks),
                              *[f"| {metric} | " + " | ".join(cell(v) for v in row) + " |" for metric, row in scores.items()]])
        self._each(lambda t: t.log({f"{prefix}/table": markdown}, step=step), "log a table", only=("tensorboard",))

    # ------------------------------------------------------------ end of the run

    def log_summary(self, results: dict, out: Path, report: Path | None = None) -> None:
        """Final averages and forgetting per method (means over its runs) and per run; report.md and
        results.json as artifacts."""
        from codecl.evaluation.summary import mean_forgetting

        values, by_method = {}, {}
        for run in results.get("runs", []):
            key = _run_key({"method": run["method"], "seed": run["seed"], "order": run.get("order_index", 0)})
            per_run = {f"final_average/{m}": v for m, v in (run.get("final_average") or {}).items()}
            per_run["forgetting"] = mean_forgetting(run)
            for name, value in per_run.items():
                values[f"summary/{key}/{name}"] = value
                if _number(value):
                    by_method.setdefault(run["method"], {}).setdefault(name, []).append(value)
        for method, metrics in by_method.items():
            for name, items in metrics.items():
                values[f"summary/{method}/{name}"] = sum(items) / len(items)
        self.log(values)
        report = report or out / "report.md"
        files = [p for p in (report, out / "results.json") if p.is_file()]
        for path in files:
            self._each(lambda t: t.log_artifact(str(path)), f"store {path.name}", only=("mlflow",))
        if report.is_file():
            self._each(lambda t: t.log({"report": report.read_text(encoding="utf-8")}), "store the report", only=("tensorboard",))

        def wandb_artifact(tracker):
            import wandb

            artifact = wandb.Artifact(name=f"{self.run_name.replace('/', '-')}-report", type="report")
            for path in files:
                artifact.add_file(str(path))
            tracker.tracker.log_artifact(artifact)

        if files:
            self._each(wandb_artifact, "store the report", only=("wandb",))

    def close(self) -> None:
        self._each(lambda t: t.finish(), "finish")
        self.trackers = []
