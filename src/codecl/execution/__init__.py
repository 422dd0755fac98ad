"""Execution-based evaluation of generated code: benchmarks with unit tests (HumanEval,
HumanEval-X, MBXP; Python and JavaScript), a sandbox that runs each program in an isolated
child process, and pass@k.

    benchmark.py  problems and samples (files or the Hugging Face hub)
    programs.py   how a completion becomes a runnable program, plus runtime guards
    sandbox.py    the isolated child process (namespaces, privilege drop, limits, timeout)
    passk.py      the unbiased pass@k estimator
    evaluate.py   run_problem_samples (reusable core) and evaluate_samples (the CLI's)
"""
from codecl.execution.benchmark import Problem, load_benchmark, load_samples
from codecl.execution.evaluate import SampleResult, evaluate_samples, run_problem_samples, summarize
from codecl.execution.passk import mean_pass_at_k, pass_at_k
from codecl.execution.sandbox import Sandbox, SandboxConfig, SandboxError, SandboxResult

__all__ = ["Problem", "SampleResult", "Sandbox", "SandboxConfig", "SandboxError", "SandboxResult", "evaluate_samples",
           "load_benchmark", "load_samples", "mean_pass_at_k", "pass_at_k", "run_problem_samples", "summarize"]
