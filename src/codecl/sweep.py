"""Sweeps: one complete run per combination of config values, and a `sweep.md` comparing them.

A sweep is the config's `sweep` list (or `codecl run --sweep KEY=V1,V2,...`, repeatable): every
combination of the listed values (their Cartesian product) becomes an ordinary run folder
`output_dir/KEY=V,...` with its own results.json and report (the resolved config in it has that
value and no sweep), so each point is resumable and reportable on its own. After the last one,
`output_dir/sweep.md` puts their final average BLEU, forgetting and parameter counts side by side.
The presets `lora-rank-sweep`, `block-ablation` and `shared-block-freeze` are sweeps.
"""
from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import yaml

from codecl.config import RunConfig, from_dict, parse_override, to_dict
from codecl.errors import ConfigError
from codecl.evaluation.claims import describe
from codecl.evaluation.stats import interval95
from codecl.evaluation.summary import mean_forgetting, method_groups
from codecl.fileio import write_text

__all__ = ["sweep_axes", "expand_sweep", "render_sweep", "run_sweep"]


def sweep_axes(items) -> list[tuple[str, list[Any]]]:
    """`["a.b=1,2", "c=x"]` → `[("a.b", [1, 2]), ("c", ["x"])]` (each value parsed as YAML, like `--set`)."""
    axes = []
    for item in items:
        key, raw = item.split("=", 1)
        values = [parse_override(f"{key}={v.strip()}")[1] for v in raw.split(",") if v.strip()]
        axes.append((key.strip(), values))
    return axes


def _set(data: dict, key: str, value: Any) -> None:
    node = data
    for part in key.split(".")[:-1]:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"sweep: {key} is not a config key ({part} is not a section)")
        node = node[part]
    if key.split(".")[-1] not in node:
        raise ConfigError(f"sweep: {key} is not a config key")
    node[key.split(".")[-1]] = value


def expand_sweep(cfg: RunConfig) -> list[tuple[str, RunConfig]]:
    """(label, config) per point of the sweep, every config validated before any runs; [] without a sweep."""
    if not cfg.sweep:
        return []
    axes, base = sweep_axes(cfg.sweep), to_dict(cfg)
    base["sweep"] = []
    points = []
    for values in itertools.product(*(vals for _, vals in axes)):
        label = ",".join(f"{key}={value}" for (key, _), value in zip(axes, values))
        data = copy.deepcopy(base)
        for (key, _), value in zip(axes, values):
            _set(data, key, value)
        data["output_dir"] = str(Path(cfg.output_dir) / label)
        try:
            points.append((label, from_dict(data)))
        except ConfigError as exc:
            raise ConfigError(f"sweep point {label}: {exc}") from None
    return points


def render_sweep(points: list[tuple[str, dict]]) -> str:
    """sweep.md: one row per (point, method) from each point's results document."""
    rows = []
    for label, results in points:
        for method, (runs, complete) in method_groups(results).items():
            final = describe(interval95(r["final_average"].get("bleu") for r in runs))
            forget = describe(interval95(mean_forgetting(r) for r in runs), lambda v: f"{100 * v:.2f}%")
            trainable = sorted({n for r in runs for n in r["trainable_parameters"].values()})
            rows.append(f"| {label} | {method}{'' if complete else '*'} | {final} | {forget} | "
                        f"{' / '.join(f'{n:,}' for n in trainable) or 'n/a'} | {runs[0]['stored_parameters']:,} |")
    header = ("| Point | Method | Final avg BLEU (95% CI over seeds) | Mean forgetting | Trainable params per task | Stored params |\n"
              "|---|---|---|---|---|---|")
    return ("# codecl sweep\n\nOne run folder per point (linked below); * = unfinished. Intervals: Student t over seeds.\n\n"
            + header + "\n" + "\n".join(rows) + "\n\n" + "\n".join(f"- [{label}]({label}/report.md)" for label, _ in points) + "\n")


def run_sweep(cfg: RunConfig, resume: bool = False, progress: bool = True) -> Path:
    """Run every point of `cfg.sweep` (as `codecl run`, each in its own folder), then write sweep.md."""
    from codecl.experiment import run_experiment
    from codecl.results import load_results

    points = expand_sweep(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "sweep.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    for label, point in points:
        print(f"\n== sweep point {label} ==")
        run_experiment(point, resume=resume, progress=progress)
    path = write_text(out / "sweep.md", render_sweep([(label, load_results(Path(p.output_dir) / "results.json")) for label, p in points]))
    print(f"\nsweep summary: {path}")
    return path
