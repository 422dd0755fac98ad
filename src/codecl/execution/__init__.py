"""Execution-based evaluation of generated code: benchmarks with unit tests (HumanEval,
HumanEval-X, MBXP; Python and JavaScript), a sandbox that runs each program in an isolated
child process, and pass@k.

    benchmark.py  problems and samples (files or the Hugging Face hub)
    programs.py   how a completion becomes a runnable program: the harness that proves the checks passed
    sandbox.py    the isolated child process (namespaces, privilege drop, limits, timeout)
    passk.py      the unbiased pass@k estimator
    evaluate.py   run_problem_samples (reusable core) and evaluate_samples (the CLI's)

A pass means the checks passed: a sample passes only when the harness sends back, on an
inherited pipe outside the program text, the random per-run token of that run, which it writes
only after the last check returned, AND the process exits 0 within the time limit.
Closed (tested in tests/execution/test_verdict.py, both languages where they apply):
  Python  the function under test runs in a process of its own, sent only prompt + completion;
          the checks (in the process that holds the token) call it through a proxy, with
          arguments and results crossing a pipe as plain data. So SystemExit(0), sys.exit/exit(),
          os._exit(0), a `__main__` guard that exits, atexit handlers, sys.excepthook, threads
          that end the process, exit status 256 (wraps to 0), results that compare equal to
          anything, and reading the tests (files, stack, the checks process's memory) all fail.
  Node    process.exit(0) (also 256), process.on('exit'|'uncaughtException') handlers,
          process.exitCode, replacing or redefining console.assert or globalThis.console
          (locked; node:assert frozen), shadowing `console` in the module scope (every
          console.assert line of the test must have been reached with a true condition).
Out of reach: in JavaScript the completion still runs in the checks' own process, so code
written against this harness can find and write the token itself, read the test files, or
return objects whose valueOf/toString/toJSON lie; the Python two-process design would close
that in Node too; not done. Details in programs.py.
Containment (root, namespaces available; see sandbox.py): own network, mount, pid and IPC
namespaces per sample; /tmp, /var/tmp, /dev/shm and the folder holding all sandbox folders are
replaced by empty read-only tmpfs, so host Unix sockets, FIFOs and files there and other
samples' folders are out of sight. Without namespaces these hold only partly (see sandbox.py).
A sample that cannot start, crashes or exhausts a limit is that sample's failure, with the
reason in `SampleResult.reason`; the run goes on.
"""
from codecl.execution.benchmark import Problem, load_benchmark, load_samples
from codecl.execution.evaluate import SampleResult, evaluate_samples, run_problem_samples, summarize
from codecl.execution.passk import mean_pass_at_k, pass_at_k
from codecl.execution.sandbox import Sandbox, SandboxConfig, SandboxError, SandboxResult

__all__ = ["Problem", "SampleResult", "Sandbox", "SandboxConfig", "SandboxError", "SandboxResult", "evaluate_samples",
           "load_benchmark", "load_samples", "mean_pass_at_k", "pass_at_k", "run_problem_samples", "summarize"]
