"""Execution-based evaluation: run sampled completions against a benchmark's unit tests in
the sandbox and report pass@k (`codecl evaluate-exec`).

`run_problem_samples` is the reusable core (training runs call it with in-memory
completions); `evaluate_samples` reads the files, runs it and returns the summary the CLI prints.
"""
from __future__ import annotations

import os
import secrets
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from codecl.errors import ConfigError, DataError
from codecl.execution.benchmark import Problem, load_benchmark, load_samples
from codecl.execution.passk import mean_pass_at_k
from codecl.execution.programs import channel_payload, command_line, program_files
from codecl.execution.sandbox import Sandbox, SandboxConfig, SandboxResult

STATUSES = ("passed", "failed", "timed_out")


@dataclass(frozen=True)
class SampleResult:
    task_id: str
    sample_index: int
    """Position of the completion in `completions_by_task[task_id]`."""
    status: str
    """"passed" (the harness proved the checks ran to their end and passed, and exit 0 in time),
    "failed" (anything else: an assertion, an early exit, a crash, a sample that could not start) or "timed_out"."""
    exit_code: int | None
    duration_s: float
    stderr_tail: str
    """Last 2,000 characters of stderr, to see why it failed."""
    reason: str = ""
    """Why it did not pass, in a few words ("" when it passed)."""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _verdict(result: SandboxResult, token: bytes, timeout_s: float) -> tuple[str, str]:
    """(status, reason): a pass needs the harness's token back AND exit status 0 in time."""
    if result.timed_out:
        return "timed_out", f"time limit ({timeout_s:g} s wall clock or CPU) exceeded"
    proved = result.channel is not None and secrets.compare_digest(result.channel, token)
    if proved and result.exit_code == 0:
        return "passed", ""
    if result.exit_code is not None and result.exit_code < 0:
        return "failed", f"killed by signal {-result.exit_code}"
    if result.exit_code != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("Node.js v")]
        errors = [line for line in lines if "Error" in line or "Assertion" in line]
        last = ((errors or lines) or [""])[-1].strip()[:200]
        return "failed", f"exit status {result.exit_code}" + (f": {last}" if last else "")
    return "failed", "exit status 0 but the checks did not run to their end (no proof from the harness)"


def _run_one(sandbox: Sandbox, problem: Problem, index: int, completion: str) -> SampleResult:
    """Run one sample; whatever goes wrong with it (it cannot start, crashes, hits a limit) is its failure."""
    try:
        network_cut = sandbox.network_cut
        files = program_files(problem, completion, network_cut)
        token = secrets.token_hex(32)
        result = sandbox.run(problem.language, files,
                             lambda interpreter, folder: command_line(problem.language, interpreter, folder, network_cut),
                             channel=channel_payload(problem, completion, token))
    except Exception as exc:  # SandboxError (setup failed in the child), OSError (EMFILE, ENOSPC), ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return SampleResult(task_id=problem.task_id, sample_index=index, status="failed", exit_code=None,
                            duration_s=0.0, stderr_tail="", reason=f"could not run: {reason}"[:500])
    status, reason = _verdict(result, token.encode(), sandbox.config.timeout_s)
    return SampleResult(task_id=problem.task_id, sample_index=index, status=status, exit_code=result.exit_code,
                        duration_s=round(result.duration_s, 4), stderr_tail=result.stderr[-2000:], reason=reason)


FDS_PER_WORKER = 16
"""Open files the evaluator holds per running sample (its pipes, pidfd, pid namespace, selector), with room to spare."""


def _room_for_open_files(workers: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE (up to the hard limit) so that `workers` samples can run at once."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        needed = 64 + FDS_PER_WORKER * workers
        if soft != resource.RLIM_INFINITY and soft < needed:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed if hard == resource.RLIM_INFINITY else min(hard, needed), hard))
    except (ImportError, OSError, ValueError):  # not fatal: a sample that cannot get its pipes fails on its own
        pass


def default_workers() -> int:
    """Parallel samples that fit the machine: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def run_problem_samples(
    problems: Mapping[str, Problem],
    completions_by_task: Mapping[str, Sequence[str]],
    *,
    timeout_s: float | None = None,
    workers: int | None = None,
    sandbox: Sandbox | None = None,
    on_result: Callable[[SampleResult], None] | None = None,
) -> dict[str, list[SampleResult]]:
    """Run every completion of every task in its own sandboxed process.

    Args:
        problems: task_id -> Problem (from `load_benchmark`, or built directly).
        completions_by_task: task_id -> completions that continue that problem's prompt
            (n per problem; pass@k needs k <= n).
        timeout_s: wall-clock limit per completion (default 10 s); leave None when passing `sandbox`.
        workers: completions run in parallel (default: the CPUs this process may use).
        sandbox: a `Sandbox` to reuse across calls (it probes the machine once, ~0.1 s);
            default: a new one with `SandboxConfig(timeout_s=timeout_s)`.
        on_result: called with each result as it finishes (from worker threads), e.g. for progress.

    Returns:
        task_id -> results in sample order, for the tasks of `completions_by_task`.

    Raises:
        DataError: a task_id of `completions_by_task` is not in `problems`.
        SandboxError: the sandbox cannot run here (e.g. node missing for JavaScript problems).
    """
    if sandbox is None:
        sandbox = Sandbox(SandboxConfig(timeout_s=10.0 if timeout_s is None else timeout_s))
    elif timeout_s is not None and timeout_s != sandbox.config.timeout_s:
        raise ConfigError(f"timeout_s={timeout_s} differs from the sandbox's {sandbox.config.timeout_s}; pass one of them")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    unknown = [t for t in completions_by_task if t not in problems]
    if unknown:
        raise DataError(f"unknown task_id {unknown[0]!r} ({len(unknown)} unknown); the benchmark has {len(problems)} problems")
    for language in sorted({problems[t].language for t in completions_by_task}):
        sandbox.check_language(language)

    jobs = [(problems[t], i, c) for t, completions in completions_by_task.items() for i, c in enumerate(completions)]
    results: dict[str, list[SampleResult | None]] = {t: [None] * len(c) for t, c in completions_by_task.items()}
    workers = workers or default_workers()
    _room_for_open_files(workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="codecl-sandbox") as pool:
        futures = [pool.submit(_run_one, sandbox, *job) for job in jobs]
        try:
            for future in as_completed(futures):
                result = future.result()
                results[result.task_id][result.sample_index] = result
                if on_result is not None:
                    on_result(result)
        except BaseException:
            for pending in futures:  # running ones finish within their timeout
                pending.cancel()
            raise
    return results  # type: ignore[return-value]  # every slot is filled


def summarize(results_by_task: Mapping[str, Sequence[SampleResult]], ks: Sequence[int], isolation: dict | None = None) -> dict:
    """The small summary `codecl evaluate-exec` prints: problems, pass@k, result counts, isolation.

    pass@k is given for each k <= the smallest n (samples of a problem); any larger k is
    listed under "pass_at_k_skipped".
    """
    counts = {status: 0 for status in STATUSES}
    per_problem = []
    for results in results_by_task.values():
        for r in results:
            counts[r.status] += 1
        per_problem.append((len(results), sum(r.passed for r in results)))
    pass_at = mean_pass_at_k(per_problem, ks)
    summary = {"problems": len(per_problem), "pass_at_k": pass_at, "results": counts}
    skipped = [k for k in ks if str(k) not in pass_at]
    if skipped:
        summary["pass_at_k_skipped"] = skipped
    if isolation is not None:
        summary["isolation"] = isolation
    return summary


def _check_ks(ks: Sequence[int]) -> list[int]:
    if not ks:
        raise ConfigError("--k needs at least one value, e.g. --k 1,10")
    bad = [k for k in ks if k < 1]
    if bad:
        raise ConfigError(f"--k values must be >= 1, got {bad[0]}")
    return sorted(set(ks))


def evaluate_samples(benchmark: Path, samples: Path, ks: list[int], timeout_s: float = 10.0,
                     workers: int | None = None, results_path: Path | None = None) -> dict:
    """Run the completions of `samples` against `benchmark` (file or hub name) and summarize (see `summarize`).

    "problems" counts the problems that have samples (a samples file may cover a subset).
    `results_path`: also write one JSON line per sample (task_id, sample_index, status, reason,
    exit_code, duration_s), in samples order.
    """
    ks = _check_ks(ks)
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    config = SandboxConfig(timeout_s=timeout_s)
    problems = load_benchmark(benchmark)
    completions = load_samples(samples, problems)
    sandbox = Sandbox(config)
    results = run_problem_samples(problems, completions, workers=workers, sandbox=sandbox)
    if results_path is not None:
        import json

        with open(results_path, "w", encoding="utf-8") as fh:
            for task_results in results.values():
                for r in task_results:
                    fh.write(json.dumps({"task_id": r.task_id, "sample_index": r.sample_index, "status": r.status,
                                         "reason": r.reason, "exit_code": r.exit_code, "duration_s": r.duration_s}) + "\n")
    return summarize(results, ks, sandbox.isolation())
