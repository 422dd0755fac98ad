"""The run report: `report.md` and `plots/*.png`, rebuilt from `results.json` alone.

It reproduces the design study's tables (the study whose claims `codecl.evaluation.claims` quotes): a
phase table per method and seed (BLEU before → after each stage, time, throughput, memory), the detailed performance matrix,
the full score matrix of every metric, and rankings by performance, parameter efficiency and
forgetting. With several seeds, cells become mean ± half-width of the 95% Student-t interval.
Plots use matplotlib's object API with the Agg canvas (no display, no pyplot global state).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from statistics import fmean
from typing import Callable, Iterable, Optional

from codecl.errors import ConfigError
from codecl.evaluation.claims import evaluate_claims
from codecl.evaluation.stats import mean_ci95, t_critical_95
from codecl.evaluation.summary import compare_methods, mean_forgetting as _mean_forgetting, method_groups
from codecl.fileio import atomic_write, write_text
from codecl.orders import run_folder_name
from codecl.registry import METRICS
from codecl.results import JOINT_STAGE, is_complete, is_joint, load_results, run_path

__all__ = ["write_report", "render_report", "summary_table", "t_critical_95", "mean_ci95", "HEADLINE"]

HEADLINE = "bleu"
"""The headline metric: the phase tables, rankings, comparisons, seed summary and plots are on it (SPEC:
forgetting is on `bleu`). Every other metric of `scores` gets its own columns and score matrix; names,
directions and descriptions come from the metric registry (`codecl.registry.METRICS`)."""
LOSS = "loss"
"""The held-out loss, which has its own section."""
_COLUMNS = {"syntax_pass": "Syntax pass", "exact_match": "Exact match"}
"""Metrics with a titled column of their own in the detailed matrix (after the headline's); the other
metrics of `scores` follow as `<name> (avg)`."""
_DISPLAY = {"bleu": "BLEU"}


def _display(metric: str) -> str:
    return _DISPLAY.get(metric, metric)


_TITLE = _display(HEADLINE)


def _metric_spec(metric: str):
    """The registry's spec of `metric`, or None (a plugin metric of results.json not installed here)."""
    try:
        return METRICS.get(metric)
    except ConfigError:
        return None


def _higher_is_better(metric: str) -> bool:
    spec = _metric_spec(metric)
    return True if spec is None else spec.higher_is_better


def _direction(metric: str) -> str:
    return "higher is better" if _higher_is_better(metric) else "lower is better"


def _metrics_legend(results: dict) -> str:
    """One line per metric of the runs' `scores`: its description and direction, from the registry."""
    names = dict.fromkeys(m for r in results["runs"] for m in r["scores"])
    lines = []
    for m in names:
        spec = _metric_spec(m)
        description = spec.description if spec is not None else "a plugin metric (its plugin is not installed here)"
        lines.append(f"- `{m}` ({_direction(m)}): {description}")
    return "Metrics:\n\n" + "\n".join(lines) if lines else ""


# ---------------------------------------------------------------- formatting


def _score(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _ci(values: list[Optional[float]], fmt: Callable[[Optional[float]], str] = _score) -> str:
    mean, half = mean_ci95(values)
    return fmt(mean) if half is None else f"{fmt(mean)} ± {fmt(half)}"


def _count(n: Optional[float]) -> str:
    return "n/a" if n is None else f"{int(n):,}"


def _seconds(s: Optional[float]) -> str:
    if s is None:
        return "n/a"
    return f"{s:.1f} s" if s < 60 else f"{s / 60:.2f} min" if s < 3600 else f"{s / 3600:.2f} h"


def _bytes(b: Optional[float]) -> str:
    if b is None:
        return "n/a"
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


# ---------------------------------------------------------------- per-run quantities


def _label(run: dict) -> str:
    k = int(run.get("order_index", 0))
    return f"{run['method']} (seed {run['seed']}" + (f", order {k}: {' → '.join(run['order'])})" if k else ")")


def _first_order(runs: list[dict]) -> list[dict]:
    """The runs of the first task order among `runs`: score-matrix rows mean the same stages only within one order."""
    first = min(int(r.get("order_index", 0)) for r in runs)
    return [r for r in runs if int(r.get("order_index", 0)) == first]


def _total_seconds(run: dict) -> float:
    return sum(v for v in run["train_seconds"].values() if v is not None)


def _peak_memory(run: dict, key: str = "peak_memory_bytes") -> Optional[float]:
    values = [v for v in run.get(key, {}).values() if v is not None]
    return max(values) if values else None


def _final(run: dict, metric: str = HEADLINE) -> Optional[float]:
    return run["final_average"].get(metric)


def _groups(results: dict) -> dict[str, tuple[list[dict], bool]]:
    """method → (runs summarised, incomplete?): its complete runs, else all of its runs (flagged)."""
    return {m: (runs, not complete) for m, (runs, complete) in method_groups(results).items()}


def _star(incomplete: bool) -> str:
    return "*" if incomplete else ""


# ---------------------------------------------------------------- markdown sections


def _cfg(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return "n/a"
        node = node[part]
    return ", ".join(map(str, node)) if isinstance(node, list) else node


def _orders_line(results: dict) -> str:
    """The training order(s) of the run's tasks: one line, or one per task order (`--orders`, `task_orders`)."""
    orders = {int(r.get("order_index", 0)): r.get("order") or results["tasks"] for r in results["runs"]}
    if len(orders) <= 1:
        order = next(iter(orders.values()), results["tasks"])
        return f"- **Tasks, in training order**: {' → '.join(order)}"
    listed = "; ".join(f"order {k}: {' → '.join(o)}" for k, o in sorted(orders.items()))
    return f"- **Tasks** (score columns in this order): {', '.join(results['tasks'])}; **training orders**: {listed}"


def _header(results: dict) -> str:
    base, cfg, tasks = results["base_model"], results["config"], results["tasks"]
    beams = _cfg(cfg, "eval.num_beams")
    decoding = "greedy" if beams in (1, "n/a") else f"beam search ({beams} beams)"
    if _cfg(cfg, "eval.no_repeat_ngram_size") not in (0, "n/a", None):
        decoding += f", no repeated {_cfg(cfg, 'eval.no_repeat_ngram_size')}-gram"
    lines = [
        "# codecl report",
        "",
        f"- **Base model**: `{base.get('name', 'n/a')}` ({_count(base.get('parameters'))} parameters, frozen)",
        f"- **Fingerprint**: `{base.get('fingerprint', 'n/a')}`",
        _orders_line(results),
        f"- **Methods**: {', '.join(dict.fromkeys(r['method'] for r in results['runs'])) or 'none yet'}; "
        f"**seeds**: {', '.join(str(s) for s in dict.fromkeys(r['seed'] for r in results['runs']))}",
        f"- **Data**: source {_cfg(cfg, 'data.source')}, at most {_cfg(cfg, 'data.max_train_examples')} training and "
        f"{_cfg(cfg, 'data.max_valid_examples')} evaluation examples per task, evaluated on the `{_cfg(cfg, 'eval.split')}` split",
        f"- **Training**: AdamW lr {_cfg(cfg, 'train.lr')}, batch {_cfg(cfg, 'train.batch_size')}, "
        f"epochs per task {_cfg(cfg, 'train.epochs')}, gradient clip {_cfg(cfg, 'train.grad_clip')}",
        f"- **LoRA**: r={_cfg(cfg, 'method.lora.rank')}, alpha={_cfg(cfg, 'method.lora.alpha')}, "
        f"dropout={_cfg(cfg, 'method.lora.dropout')}, on {_cfg(cfg, 'method.lora.target_modules') or 'the model family’s attention and MLP projections'}",
        f"- **Inserted block**: {_cfg(cfg, 'method.block.stack')} stack, position {_cfg(cfg, 'method.block.position')}, "
        f"init {_cfg(cfg, 'method.block.init')}; hybrid_shared's shared block "
        f"{'frozen after the first task' if _cfg(cfg, 'method.block.shared_after_first') == 'freeze' else 'trained with every task'}",
        f"- **Decoding**: {decoding}, at most {_cfg(cfg, 'eval.max_new_tokens')} new tokens",
        *_exec_lines(cfg, tasks),
        *_truncation_lines(results),
        *_provenance_lines(results),
        f"- codecl {results['codecl_version']}, results schema {results['schema_version']}",
    ]
    incomplete = [_label(r) for r in results["runs"] if not is_complete(results, r)]
    if incomplete:
        lines += ["", f"\\* Incomplete (interrupted) runs, summarised at their last completed stage: {', '.join(incomplete)}."]
    return "\n".join(lines)


def _truncation_lines(results: dict) -> list[str]:
    """How many generations stopped at the token budget (cut programs are scored as they are)."""
    counts = [n for r in results["runs"] for row in r.get("truncated_outputs", []) for n in row]
    if not counts:
        return []
    cut = sum(counts)
    if not cut:
        return ["- **Generation budget**: every output ended with end-of-sequence (none cut at the token budget)"]
    return [f"- **Generation budget**: {cut:,} generated outputs (summed over runs, stages and tasks) stopped at "
            f"{_cfg(results['config'], 'eval.max_new_tokens')} new tokens before end-of-sequence; they are scored as cut "
            "(`truncated` in the predictions files; `truncated_outputs` in results.json)"]


def _provenance_lines(results: dict) -> list[str]:
    prov = results.get("provenance")
    if not prov:
        return []
    packages = ", ".join(f"{k} {v}" for k, v in prov.get("packages", {}).items() if v)
    commit = prov.get("git_commit") or "not a git checkout"
    revisions = f"model revision {prov.get('model_revision') or 'n/a'}, data revision {prov.get('data_revision') or 'n/a'}"
    return [f"- **Provenance**: Python {prov.get('python')}, {packages}; device {prov.get('device')}; code {commit}; {revisions}; "
            f"examples sha256 `{str(prov.get('data_fingerprint'))[:16]}…`"]


def _exec_lines(cfg: dict, tasks: list[str]) -> list[str]:
    """The `pass_at_1` line: where it comes from, or that it was skipped (never reported as 0)."""
    ev = cfg.get("eval") if isinstance(cfg.get("eval"), dict) else {}
    pairs = [str(item).split("=", 1) for item in ev.get("exec_benchmarks") or [] if "=" in str(item)]
    pairs = [(lang.strip(), source.strip()) for lang, source in pairs if lang.strip() in tasks]
    if not pairs:
        return []
    if not ev.get("allow_code_execution"):
        return [f"- **pass@1** (`pass_at_1`): skipped: code execution not allowed "
                f"(set `eval.allow_code_execution=true` to run the generated code in the sandbox)"]
    cap = ev.get("exec_max_problems")
    limit = f", first {cap} problems" if cap else ""
    where = "; ".join(f"{lang} on `{Path(source).name}`" for lang, source in pairs)
    return [f"- **pass@1** (`pass_at_1`): the function generated from each problem's description, run against the "
            f"benchmark's unit tests in the sandbox ({where}{limit}; timeout {ev.get('exec_timeout_s', 'n/a')} s); "
            f"n/a for tasks without a benchmark"]


def _phase_table(results: dict, run: dict) -> str:
    tasks, R = results["tasks"], run["scores"][HEADLINE]
    curves = run.get("loss_curve", {})
    L = run["scores"].get(LOSS)
    header = ["Phase", "Task", f"{_TITLE} before → after", f"Base {_TITLE}"] + (["Held-out loss before → after"] if L else [])
    header += ["Training time", "Samples/s", "Peak memory", "Peak above start"]
    header += ["Training loss first → last"] if curves else []
    rows = []
    for stage, task in enumerate(run["stages"][1:], start=1):
        cell = (lambda M, s: M[s][tasks.index(task)]) if task in tasks else (lambda M, s: mean_ci95(M[s])[0])  # joint: the mean
        before, after, base = (cell(R, s) for s in (stage - 1, stage, 0))
        samples = run["train_samples_per_second"].get(task)
        reused = run.get("reused_stages", {}).get(task)  # identical training done once, by that method
        row = [str(stage), task + (f" (from {reused})" if reused else ""), f"{_score(before)} → {_score(after)}", _score(base)]
        row += [f"{_score(cell(L, stage - 1))} → {_score(cell(L, stage))}"] if L else []
        row += [_seconds(run["train_seconds"].get(task)), "n/a" if samples is None else f"{samples:.1f}",
                _bytes(run["peak_memory_bytes"].get(task)), _bytes(run.get("peak_memory_above_start_bytes", {}).get(task))]
        if curves:
            curve = _losses(curves.get(task, []))
            row.append(f"{curve[0]:.4f} → {curve[-1]:.4f}" if curve else "n/a")
        rows.append(row)
    T = len(run["stages"]) - 1
    for task, value in run["forgetting"].items():
        row = ["Final", f"{task} (retention)", f"{_score(R[T][tasks.index(task)])} (forgetting {_pct(value)})", "-"]
        row += [f"{_score(L[T][tasks.index(task)])}"] if L else []
        rows.append(row + ["-"] * 4 + (["-"] if curves else []))
    done = "" if is_complete(results, run) else f" — incomplete*: {T} of {len(tasks)} tasks trained"
    return f"### {_label(run)}{done}\n\n" + _table(header, rows)


def _losses(curve: list) -> list[float]:
    """Loss values of a loss curve whose points are numbers or `{"step", "loss", ...}` objects."""
    values = [point.get("loss") if isinstance(point, dict) else point for point in curve]
    return [v for v in values if isinstance(v, (int, float))]


def _optional_metrics(results: dict) -> list[str]:
    names = dict.fromkeys(m for r in results["runs"] for m in r["scores"] if m not in (HEADLINE, *_COLUMNS))
    return list(names)


def _detailed_matrix(results: dict) -> str:
    tasks = results["tasks"]
    forget_tasks, extra = tasks[:-1], _optional_metrics(results)
    joint = any(is_joint(r) for r in results["runs"])  # a column for the joint stage, which trains once on every task
    header = (["Method", "Seed"] + [f"{t} {_TITLE}" for t in tasks] + [f"Avg {_TITLE}"] + [f"Forgetting {t}" for t in forget_tasks]
              + ["BWT", "FWT", f"Trainable params ({' / '.join(tasks)})"] + ([f"Trainable params ({JOINT_STAGE} stage)"] if joint else [])
              + ["Stored params", "Total time", "Peak memory", "Peak above start", *_COLUMNS.values()] + [f"{m} (avg)" for m in extra])
    rows = []
    for run in results["runs"]:
        T, star = len(run["stages"]) - 1, _star(not is_complete(results, run))
        row = [run["method"] + star, str(run["seed"])] + [_score(v) for v in run["scores"][HEADLINE][T]]
        row += [_score(_final(run))] + [_pct(run["forgetting"].get(t)) for t in forget_tasks]
        row += [_score(run["bwt"][HEADLINE]), _score(run["fwt"][HEADLINE])]
        row += _trainable_cells(run, tasks, joint) + [_count(run["stored_parameters"])]
        row += [_seconds(_total_seconds(run)), _bytes(_peak_memory(run)), _bytes(_peak_memory(run, "peak_memory_above_start_bytes")),
                *(_score(_final(run, m)) for m in _COLUMNS)]
        rows.append(row + [_score(_final(run, m)) for m in extra])
    note = (f"Scores are at the last stage; Avg = mean over tasks. Forgetting = (R[i][i] − R[T][i]) / R[i][i] on {_TITLE} "
            f"(negative = improved). BWT/FWT on {_TITLE} (Lopez-Paz & Ranzato 2017). `bleu_sentence_smoothed` is the "
            "CodeXGLUE-style sentence-averaged smoothed BLEU-4; `loss` is the held-out teacher-forced loss in nats per "
            "token (lower is better). Peak memory is the process's peak during training (mostly its baseline: data, "
            "base model); peak above start is that peak minus the level at the stage's start — what the method itself "
            "needed (activations, gradients, optimizer state).")
    if joint:
        note += (f" The joint baseline trains one stage, `{JOINT_STAGE}`, on every task's data: its trainable parameters "
                 "are that stage's (- where a run has no such stage).")
    legend = _metrics_legend(results)
    return _table(header, rows) + "\n\n" + note + (f"\n\n{legend}" if legend else "")


def _trainable_cells(run: dict, tasks: list[str], joint_column: bool) -> list[str]:
    """Trainable parameters per task, then (with `joint_column`) in the joint stage; - where the run has no such stage."""
    per_task = "-" if is_joint(run) else " / ".join(_count(run["trainable_parameters"].get(t)) for t in tasks)
    if not joint_column:
        return [per_task]
    return [per_task, _count(run["trainable_parameters"].get(JOINT_STAGE)) if is_joint(run) else "-"]


def _score_matrices(results: dict, run: dict) -> str:
    tasks, parts = results["tasks"], [f"### {_label(run)}"]
    for metric, R in run["scores"].items():
        rows = [[stage] + [_score(v) for v in R[s]] for s, stage in enumerate(run["stages"])]
        parts.append(f"**{metric}** ({_direction(metric)})\n\n" + _table(["After stage"] + tasks, rows))
    return "\n\n".join(parts)


def _rankings(results: dict) -> str:
    groups, base_params = _groups(results), results["base_model"].get("parameters")
    stats = []
    for method, (runs, incomplete) in groups.items():
        stored = fmean(r["stored_parameters"] for r in runs)
        bleu = mean_ci95(_final(r) for r in runs)[0]
        per_m = None if bleu is None or stored == 0 else bleu / (stored / 1e6)
        stats.append({"name": method + _star(incomplete), "runs": runs, "bleu": bleu, "stored": stored, "per_m": per_m,
                      "forget": mean_ci95(_mean_forgetting(r) for r in runs)[0], "incomplete": incomplete})

    def ordered(key: str, reverse: bool) -> list[dict]:
        """Finished methods ranked first, then interrupted ones (not comparable), then undefined values."""
        sign = -1 if reverse else 1
        return sorted(stats, key=lambda s: (s[key] is None, s["incomplete"], 0 if s[key] is None else sign * s[key]))

    share = (lambda n: "n/a") if not base_params else (lambda n: f"{100 * n / base_params:.2f}%")
    perf = [[str(i), s["name"], str(len(s["runs"])), _ci([_final(r) for r in s["runs"]])]
            for i, s in enumerate(ordered("bleu", _higher_is_better(HEADLINE)), 1)]
    eff = [[str(i), s["name"], "n/a" if s["per_m"] is None else f"{s['per_m']:.4f}", _count(s["stored"]), share(s["stored"])]
           for i, s in enumerate(ordered("per_m", True), 1)]
    small = [[str(i), s["name"], _count(s["stored"]), share(s["stored"]), _score(s["bleu"])] for i, s in enumerate(ordered("stored", False), 1)]
    forget = [[str(i), s["name"], _ci([_mean_forgetting(r) for r in s["runs"]], _pct)] for i, s in enumerate(ordered("forget", False), 1)]
    return "\n\n".join([
        "Methods with a finished run are ranked on their finished runs (mean over seeds); interrupted methods (*) "
        "follow, summarised at their last completed stage.",
        f"### By performance (final average {_display(HEADLINE)}, {_direction(HEADLINE)})",
        _table(["Rank", "Method", "Seeds", f"Final avg {_display(HEADLINE)}"], perf),
        f"### By parameter efficiency (final average {_TITLE} per million stored parameters)",
        _table(["Rank", "Method", f"{_TITLE} per M stored params", "Stored params", "Share of base"], eff),
        "### By stored parameters (fewest first)", _table(["Rank", "Method", "Stored params", "Share of base", f"Final avg {_TITLE}"], small),
        "### By forgetting (mean forgetting over tasks, lower is better)", _table(["Rank", "Method", "Mean forgetting"], forget),
    ])


def _seed_summary(results: dict) -> Optional[str]:
    groups = _groups(results)
    if all(len(runs) < 2 for runs, _ in groups.values()):
        return None
    tasks = results["tasks"]
    header = ["Method", "Seeds"] + [f"{t} {_TITLE}" for t in tasks] + [f"Avg {_TITLE}"] + [f"Forgetting {t}" for t in tasks[:-1]]
    header += ["BWT", "FWT", "Total time (s)"]
    rows, matrices = [], []
    for method, (runs, incomplete) in groups.items():
        last = [r["scores"][HEADLINE][-1] for r in runs]
        row = [method + _star(incomplete), ", ".join(str(s) for s in sorted({r["seed"] for r in runs})) + _orders_note(runs)]
        row += [_ci([m[j] for m in last]) for j in range(len(tasks))] + [_ci([_final(r) for r in runs])]
        row += [_ci([r["forgetting"].get(t) for r in runs], _pct) for t in tasks[:-1]]
        row += [_ci([r["bwt"][HEADLINE] for r in runs]), _ci([r["fwt"][HEADLINE] for r in runs])]
        rows.append(row + [_ci([_total_seconds(r) for r in runs], lambda v: "n/a" if v is None else f"{v:.1f}")])
        same = _first_order(runs)
        ordered = f" (order {' → '.join(same[0]['order'])})" if len(same) < len(runs) else ""
        stages = max((r["stages"] for r in same), key=len)
        cells = [[stage] + [_ci([r["scores"][HEADLINE][s][j] for r in same if s < len(r["stages"])]) for j in range(len(tasks))]
                 for s, stage in enumerate(stages)]
        matrices.append(f"**{method}{_star(incomplete)}** — {_TITLE}, mean ± 95% CI over seeds{ordered}\n\n" + _table(["After stage"] + tasks, cells))
    note = ("Cells are mean ± half-width of the two-sided 95% Student-t interval over seeds (t from a table for df ≤ 30, "
            "Abramowitz & Stegun 26.7.5 beyond). Methods with a finished run are summarised over their finished runs only.")
    return "\n\n".join([_table(header, rows), note, *matrices])


def _orders_note(runs: list[dict]) -> str:
    n = len({int(r.get("order_index", 0)) for r in runs})
    return f" × {n} orders" if n > 1 else ""


def _orders_section(results: dict) -> Optional[str]:
    """Order sensitivity: each method's final averages per task order (over seeds) and their spread."""
    groups = _groups(results)
    orders = {int(r.get("order_index", 0)): r.get("order", results["tasks"]) for r in results["runs"]}
    if len(orders) < 2:
        return None
    header = ["Method"] + [f"order {k}: {' → '.join(o)}" for k, o in sorted(orders.items())] + [f"Spread {_TITLE} (max − min)", "Spread loss"]
    rows = []
    for method, (runs, incomplete) in groups.items():
        row = [method + _star(incomplete)]
        means = {"bleu": [], "loss": []}
        for k in sorted(orders):
            group = [r for r in runs if int(r.get("order_index", 0)) == k]
            bleu, loss = [_final(r) for r in group], [_final(r, LOSS) for r in group]
            row.append(f"{_TITLE} {_ci(bleu)}; loss {_ci(loss)}" if group else "–")
            for key, values in (("bleu", bleu), ("loss", loss)):
                present = [v for v in values if v is not None]
                if present:
                    means[key].append(sum(present) / len(present))
        row += [_score(max(v) - min(v)) if len(v) > 1 else "n/a" for v in (means["bleu"], means["loss"])]
        rows.append(row)
    note = ("Continual-learning results depend on the order the tasks arrive in. Each cell: final average over the tasks, "
            "mean ± 95% CI over seeds, for that order; the spread is the largest minus the smallest order mean. Every other "
            "section averages over seeds and orders together, except score matrices (one order: their rows mean the same stages).")
    return "\n\n".join([_table(header, rows), note])


def _retention_section(results: dict) -> Optional[str]:
    """General-ability retention: each `eval.retention` benchmark's pass@1 on the base and after every stage."""
    runs = [r for r in results["runs"] if r.get("retention")]
    if not runs:
        return None
    names = list(dict.fromkeys(n for r in runs for n in r["retention"]))
    rows = []
    for run in runs:
        for name in names:
            values = run["retention"].get(name, [])
            final = values[-1] if values else None
            drop = None if final is None or not values or values[0] is None else values[0] - final
            rows.append([_label(run), name, " → ".join("–" if v is None else _score(v) for v in values), _score(drop)])
    note = ("`eval.retention`: pass@1 (sandbox) of general benchmarks on the base and after each stage, with the modules a task of the "
            "benchmark's language would get — what the stream costs the base's general ability (TRACE). Drop = base − final; "
            "positive means the base's ability was lost. `–`: not executed (`eval.allow_code_execution` off).")
    return "\n\n".join([_table(["Run", "Benchmark", "pass@1: base → each stage", "Drop"], rows), note])


def _routing_section(results: dict) -> Optional[str]:
    """Task-free inference: oracle (task id given) vs routed final averages, and routing accuracy per stage."""
    routed = [r for r in results["runs"] if "routed_scores" in r]
    if not routed:
        return None
    rows = []
    for run in routed:
        acc = ", ".join("–" if v is None else _pct(v) for v in run["routing_accuracy"])
        rows.append([_label(run), _score(_final(run)), _score(run.get("routed_final_average", {}).get(HEADLINE)),
                     _score(_final(run, LOSS)), _score(run.get("routed_final_average", {}).get(LOSS)), acc])
    note = ("`eval.routing: router`: every evaluation input is also sent to the modules of the task the router picks from the input "
            "alone (nearest task prototype of the frozen base's mean-pooled input states, diagonal-LDA distance, `codecl.routing`), "
            "among the tasks trained so far. Routing accuracy: share of the trained tasks' evaluation inputs routed to their own task, "
            "after each stage (stage 0 has nothing to route to). Methods without task-specific modules are unaffected by routing.")
    return "\n\n".join([_table(["Run", f"Oracle {_TITLE}", f"Routed {_TITLE}", "Oracle loss", "Routed loss", "Routing accuracy by stage"], rows), note])


def _comparisons(results: dict, metric: str = HEADLINE) -> str:
    """Paired t-tests between every two finished methods on final average `metric` over shared seeds."""
    finished = [(m, runs) for m, (runs, incomplete) in _groups(results).items()
                if not incomplete and all(metric in r["final_average"] for r in runs)]
    if len(finished) < 2:
        return "Needs finished runs of at least two methods."
    rows = []
    for i, (a, runs_a) in enumerate(finished):
        for b, runs_b in finished[i + 1:]:
            test = compare_methods(runs_a, runs_b, metric)
            diff, half = test["mean_difference"], test["half_width"]
            if half is None:
                rows.append([a, b, str(test["n"]), "n/a" if diff is None else f"{diff:+.4f}", "n/a", "n/a", "n/a", "needs ≥ 2 seeds"])
                continue
            t = "±inf" if test["t"] is None else f"{test['t']:.2f}"
            rows.append([a, b, str(test["n"]), f"{diff:+.4f}", f"[{test['low']:+.4f}, {test['high']:+.4f}]", t,
                         f"{test['p_value']:.3g}", "yes" if test["significant"] else "no"])
    name = _display(metric)
    note = (f"Paired t-test over the seeds both methods finished (difference A − B of final average {name} per seed; "
            "95% Student-t interval, n − 1 degrees of freedom; significant = p < 0.05, i.e. the interval excludes 0).")
    if not _higher_is_better(metric):  # the registry's direction
        better = "fits the held-out references better" if metric == LOSS else "scores better"
        note += f" On {name}, lower is better: a negative difference means A {better}."
    header = ["A", "B", "Seeds", "Mean difference A − B", "95% CI", "t", "p", "Significant"]
    return _table(header, rows) + "\n\n" + note


def _claims(results: dict) -> str:
    rows = [[f"{c.statement} (`{c.id}`)", c.study, c.test, c.estimate, f"**{c.verdict}**"] for c in evaluate_claims(results)]
    note = ("A claim holds when the whole 95% Student-t interval over seeds lies on its side of 0, does not hold when it "
            "lies wholly on the other side, and is inconclusive otherwise (the interval spans 0, one seed gives no "
            "interval, or the method is not in this run). Only finished runs count. The design study ran one seed.")
    return _table(["Claim", "Study", "Tested here", "This run", "Verdict"], rows) + "\n\n" + note


def _loss_section(results: dict) -> Optional[str]:
    """The held-out loss: per method (mean ± 95% CI over seeds) base → after own stage → final per task,
    final average, BWT and FWT on loss, then paired comparisons on final average loss."""
    groups = {m: g for m, g in _groups(results).items() if all("loss" in r["scores"] for r in g[0])}
    if not groups:
        return None
    tasks = results["tasks"]
    header = ["Method", "Seeds"] + [f"{t}: base → own stage → final" for t in tasks] + ["Final avg loss", "BWT (loss)", "FWT (loss)"]
    rows = []
    for method, (runs, incomplete) in groups.items():
        row = [method + _star(incomplete), str(len(runs))]
        for j, task in enumerate(tasks):
            own = [r["scores"]["loss"][r["stages"].index(task)][j] for r in runs if task in r["stages"]]
            own = own or [r["scores"]["loss"][1][j] for r in runs if is_joint(r)]
            base, final = ([r["scores"]["loss"][s][j] for r in runs] for s in (0, -1))
            row.append(f"{_ci(base)} → {_ci(own)} → {_ci(final)}")
        row += [_ci([_final(r, "loss") for r in runs]), _ci([r["bwt"].get("loss") for r in runs]), _ci([r["fwt"].get("loss") for r in runs])]
        rows.append(row)
    note = ("Teacher-forced cross-entropy of the reference code given its description, in nats per reference token "
            "(end-of-sequence included, padding excluded), over each task's evaluation examples. **Lower is better**: "
            "BWT (loss) > 0 means earlier tasks got worse after later stages (forgetting), FWT (loss) < 0 that a task "
            "was already easier before its own stage (forward transfer). Cells: mean ± 95% CI over seeds.")
    return "\n\n".join([_table(header, rows), note, "### Comparisons between methods (final average loss)", _comparisons(results, "loss")])


def render_report(results: dict, plot_files: Iterable[str] = (), examples: Optional[str] = None) -> str:
    """The whole report.md text for a validated results document (and `examples`, rendered from the
    predictions files by `write_report`)."""
    loss = _loss_section(results)
    embedded = results["base_model"].get("name") == "embedded"
    lead = ["## Held-out loss (nats per token, lower is better)",
            "The embedded base is small and trained for minutes: its programs rarely run or parse, so BLEU, exact match and "
            "syntax pass sit near their floor and differences between methods are mostly seed noise. The held-out loss "
            "still separates the methods; read it first.", loss] if loss and embedded else []
    parts = [_header(results), *lead, "## Training phases", *(_phase_table(results, r) for r in results["runs"]),
             "## Detailed performance matrix", _detailed_matrix(results)]
    if loss and not embedded:
        parts += ["## Held-out loss (nats per token, lower is better)", loss]
    seeds = _seed_summary(results)
    if seeds:
        parts += ["## Across seeds", seeds]
    orders = _orders_section(results)
    if orders:
        parts += ["## Task orders", orders]
    routing = _routing_section(results)
    if routing:
        parts += ["## Task-free inference (routing)", routing]
    retention = _retention_section(results)
    if retention:
        parts += ["## General-ability retention", retention]
    parts += [f"## Comparisons between methods (final average {_TITLE})", _comparisons(results),
              "## The study's claims", _claims(results)]
    if examples:
        parts += ["## Examples", examples]
    parts += ["## Rankings", _rankings(results), "## Score matrices",
              "Rows: the model after each stage (`base` = before any training); columns: the task evaluated.",
              *(_score_matrices(results, r) for r in results["runs"])]
    plots = list(plot_files)
    if plots:
        parts += ["## Plots", *(f"![{Path(p).stem}](plots/{Path(p).name})" for p in plots)]
    return "\n\n".join(parts) + "\n"


def summary_table(results: dict) -> str:
    """A short fixed-width table for the console: one line per run."""
    header = (f"{'method':<14} {'seed':>6} {'stages':>7} {'final avg ' + _TITLE:>15} {'final avg loss':>15} {'forgetting':>11} "
              f"{'stored params':>14} {'train time':>11}")
    orders = len({int(r.get("order_index", 0)) for r in results["runs"]}) > 1
    if orders:
        header = header.replace(f"{'seed':>6} ", f"{'seed':>6} {'order':>5} ", 1)
    lines = [header, "-" * len(header)]
    for run in results["runs"]:
        done = "joint" if is_joint(run) else f"{len(run['stages']) - 1}/{len(results['tasks'])}"  # joint: one stage on all tasks
        stages = f"{done}{_star(not is_complete(results, run))}"
        order = f"{int(run.get('order_index', 0)):>5} " if orders else ""
        lines.append(f"{run['method']:<14} {run['seed']:>6} {order}{stages:>7} {_score(_final(run)):>15} {_score(_final(run, 'loss')):>15} "
                     f"{_pct(_mean_forgetting(run)):>11} "
                     f"{_count(run['stored_parameters']):>14} {_seconds(_total_seconds(run)):>11}")
    return "\n".join(lines)


# ---------------------------------------------------------------- plots


def _save(fig, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # Agg-rendered on savefig; never opens a window

    return Figure(figsize=(width, height), layout="constrained")


def _nan(v: Optional[float]) -> float:
    return math.nan if v is None else v


def _plot_matrix(R: list[list[Optional[float]]], stages: list[str], tasks: list[str], title: str, path: Path) -> Path:
    fig = _figure(1.6 + 1.4 * len(tasks), 1.2 + 0.6 * len(stages))
    ax = fig.add_subplot()
    values = [[_nan(v) for v in row] for row in R]
    image = ax.imshow(values, cmap="viridis", vmin=0.0, aspect="auto")
    fig.colorbar(image, ax=ax, label=_TITLE)
    top = max((v for row in values for v in row if not math.isnan(v)), default=0.0)
    for s, row in enumerate(values):
        for j, v in enumerate(row):
            dark = math.isnan(v) or v < 0.6 * top  # light text on the dark end of viridis
            ax.text(j, s, "n/a" if math.isnan(v) else f"{v:.4f}", ha="center", va="center", color="white" if dark else "black")
    ax.set_xticks(range(len(tasks)), labels=tasks)
    ax.set_yticks(range(len(stages)), labels=[f"after {s}" for s in stages])
    ax.set_xlabel("task evaluated")
    ax.set_title(title)
    return _save(fig, path)


def _plot_final_scores(results: dict, groups: dict, path: Path) -> Path:
    tasks, methods = results["tasks"], list(groups)
    fig = _figure(2 + 1.5 * len(tasks) * max(1, len(methods)) / 2, 4)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(methods))
    for k, method in enumerate(methods):
        runs, incomplete = groups[method]
        cells = [mean_ci95(r["scores"][HEADLINE][-1][j] for r in runs) for j in range(len(tasks))]
        xs = [j + (k - (len(methods) - 1) / 2) * width for j in range(len(tasks))]
        errors = [math.nan if half is None else half for _, half in cells]  # nan: no error bar (one seed)
        ax.bar(xs, [_nan(m) for m, _ in cells], width, yerr=errors, label=method + _star(incomplete), capsize=3)
    ax.set_xticks(range(len(tasks)), labels=tasks)
    ax.set_ylabel(f"final {_TITLE}")
    ax.set_title(f"Final {_TITLE} per task (error bars: 95% CI over seeds)")
    ax.legend(fontsize="small")
    return _save(fig, path)


def params_points(groups: dict) -> dict[str, tuple[Optional[float], float, Optional[float]]]:
    """Per method: (trainable parameters per trained stage, stored parameters, final average BLEU), means
    over seeds. Stages are keyed by name, so the joint baseline's one `joint` stage counts with its real figure."""
    points = {}
    for method, (runs, _) in groups.items():
        trainable = mean_ci95(fmean(r["trainable_parameters"][s] for s in r["stages"][1:] if s in r["trainable_parameters"])
                              for r in runs if set(r["stages"][1:]) & set(r["trainable_parameters"]))[0]
        points[method] = (trainable, fmean(r["stored_parameters"] for r in runs), mean_ci95(_final(r) for r in runs)[0])
    return points


def _plot_score_vs_params(groups: dict, path: Path) -> Path:
    from matplotlib.ticker import NullFormatter

    fig = _figure(10, 4)
    axes = fig.subplots(1, 2)
    points = params_points(groups)
    for method, (runs, incomplete) in groups.items():
        trainable, stored, bleu = points[method]
        for ax, x in zip(axes, (trainable, stored)):
            if bleu is not None and x:
                ax.scatter([x], [bleu], s=50)
                ax.annotate(method + _star(incomplete), (x, bleu), textcoords="offset points", xytext=(5, 5), fontsize="small")
    for ax, label in zip(axes, ("trainable parameters per stage (joint: its one stage)", "stored parameters after the last stage")):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor log labels collide
        ax.margins(x=0.25, y=0.15)
        ax.set_xlabel(label + " (log scale)")
        ax.set_ylabel(f"final average {_TITLE}")
    fig.suptitle(f"Final average {_TITLE} vs parameters")
    return _save(fig, path)


def _plot_across_stages(results: dict, groups: dict, path: Path, metric: str = HEADLINE) -> Path:
    tasks = results["tasks"]
    label = "held-out loss (nats/token, lower is better)" if metric == LOSS else (
        _display(metric) if _higher_is_better(metric) else f"{_display(metric)} (lower is better)")
    fig = _figure(4.5 * len(tasks), 4)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    stage_names = ["base", *tasks]
    for j, (ax, task) in enumerate(zip(axes, tasks)):
        for method, (runs, incomplete) in groups.items():
            longest = max(len(r["stages"]) for r in runs)
            ys = [mean_ci95(r["scores"][metric][s][j] for r in runs if s < len(r["stages"]))[0] for s in range(longest)]
            ax.plot(range(longest), [_nan(y) for y in ys], marker="o", label=method + _star(incomplete))
        ax.set_xticks(range(len(stage_names)), labels=[f"after {s}" for s in stage_names], rotation=30)
        ax.set_title(f"{_display(metric)} on {task}")
        ax.set_ylabel(label)
    axes[0].legend(fontsize="small")
    return _save(fig, path)


def _matrix_plots(results: dict, plots: Path) -> list[Path]:
    paths, tasks = [], results["tasks"]
    for method, (runs, _) in _groups(results).items():
        every = [r for r in results["runs"] if r["method"] == method]
        if len(every) == 1:
            run = every[0]
            paths.append(_plot_matrix(run["scores"][HEADLINE], run["stages"], tasks, f"{_display(HEADLINE)} — {_label(run)}", plots / f"score_matrix_{method}.png"))
            continue
        for run in every:
            name = run_folder_name(run["seed"], int(run.get("order_index", 0)))
            paths.append(_plot_matrix(run["scores"][HEADLINE], run["stages"], tasks, f"{_display(HEADLINE)} — {_label(run)}", plots / f"score_matrix_{method}_{name}.png"))
        runs = _first_order(runs)
        stages = max((r["stages"] for r in runs), key=len)
        mean = [[mean_ci95(r["scores"][HEADLINE][s][j] for r in runs if s < len(r["stages"]))[0] for j in range(len(tasks))] for s in range(len(stages))]
        paths.append(_plot_matrix(mean, stages, tasks, f"{_display(HEADLINE)} — {method}, mean over {len(runs)} seeds", plots / f"score_matrix_{method}.png"))
    return paths


def _write_plots(results: dict, plots: Path) -> list[Path]:
    if not results["runs"]:
        return []
    groups = _groups(results)
    paths = _matrix_plots(results, plots)
    paths.append(_plot_final_scores(results, groups, plots / "final_scores.png"))
    paths.append(_plot_score_vs_params(groups, plots / "score_vs_params.png"))
    paths.append(_plot_across_stages(results, groups, plots / "bleu_across_stages.png"))
    if all(LOSS in r["scores"] for runs, _ in groups.values() for r in runs):
        paths.append(_plot_across_stages(results, groups, plots / "loss_across_stages.png", LOSS))
    for stale in plots.glob("score_matrix_*.png"):  # methods or seeds no longer in results.json
        if stale not in paths:
            stale.unlink()
    return paths


def _read_predictions(path: Path) -> dict[str, dict]:
    import json

    if not path.is_file():
        return {}
    lines = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue  # a hand-edited or torn line: the report shows the rest
        if isinstance(item, dict) and "id" in item:
            lines[item["id"]] = item
    return lines


def _fence(code: str, limit: int = 600) -> str:
    text = code if len(code) <= limit else code[:limit] + "\n… (cut here for the report)"
    return "```\n" + text.replace("```", "`\u200b``") + "\n```"


def render_examples(run_dir: Path, results: dict, per_task: int = 3) -> Optional[str]:
    """A few evaluated examples per task, side by side: the description, the reference, the base's
    output and each method's output after its last stage (its first seed), from the predictions files.
    The examples are the ones with the shortest references (readable), ties by id."""
    tasks, parts = results["tasks"], []
    firsts = {}
    for run in results["runs"]:
        firsts.setdefault(run["method"], run)
    for task in tasks:
        base = _read_predictions(run_dir / "predictions" / "base" / f"{task}.jsonl")
        if not base:
            continue
        chosen = sorted(base.values(), key=lambda x: (len(x.get("reference", "")), str(x["id"])))[:per_task]
        outputs = {m: _read_predictions(run_path(run_dir, r) / "predictions" / r["stages"][-1] / f"{task}.jsonl")
                   for m, r in firsts.items() if len(r["stages"]) > 1}
        for item in chosen:
            lines = [f"### {task}: `{item['id']}`", f"**Description**: {item.get('source', '').strip()}", "**Reference**",
                     _fence(item.get("reference", ""))]
            for name, found in [("base", item), *((m, outputs[m].get(item["id"])) for m in outputs)]:
                if found is None:
                    continue
                marks = [f"sentence BLEU {found['bleu_sentence']:.3f}"] if isinstance(found.get("bleu_sentence"), (int, float)) else []
                marks += ["parses" if found.get("syntax_ok") else "does not parse"]
                marks += ["exact match"] if found.get("exact_match") else []
                marks += ["cut at the token budget"] if found.get("truncated") else []
                marks += [f"loss {found['loss']:.3f}"] if isinstance(found.get("loss"), (int, float)) else []
                stage = "before training" if name == "base" else f"after {firsts[name]['stages'][-1]}, seed {firsts[name]['seed']}"
                lines += [f"**{name}** ({stage}; {', '.join(marks)})", _fence(found.get("prediction", ""))]
            parts.append("\n\n".join(lines))
    if not parts:
        return None
    return ("Shortest references of each task's evaluation set; every prediction is in the run folder "
            "(`predictions/base/<task>.jsonl`, `<method>/seed-<N>/predictions/<stage>/<task>.jsonl`).\n\n" + "\n\n".join(parts))


def write_report(run_dir: str | os.PathLike) -> Path:
    """Rewrite `run_dir/report.md` and `run_dir/plots/*.png` from `run_dir/results.json` and the saved
    predictions; CheckpointError naming the file when results.json is missing or corrupted. Returns the report's path."""
    run_dir = Path(run_dir)
    results = load_results(run_dir / "results.json")
    plots = _write_plots(results, run_dir / "plots")
    return write_text(run_dir / "report.md", render_report(results, [p.name for p in plots], render_examples(run_dir, results)))
