"""Execution-based evaluation inside `codecl run`: `pass_at_1` after every stage.

Configuration (`eval` section): `exec_benchmarks` maps a task to a benchmark
(`["python=/path/HumanEval.jsonl.gz", "javascript=THUDM/humaneval-x:js"]`, a local JSONL(.gz)
file or a hub name, see `benchmark.load_benchmark`); `allow_code_execution` is the opt-in;
`exec_timeout_s` the wall-clock limit per program; `exec_max_problems` keeps the first N
problems of each benchmark (file order). Without the opt-in nothing is loaded or run, the run
logs `{"event": "exec_skipped", ...}` once, `pass_at_1` is absent from the scores (never 0),
and the report says "skipped: code execution not allowed".

What the model sees (as in training, where the input is a docstring's first paragraph and the
output a whole function without its docstring):
- Python: the prompt is parsed with `ast` (after appending `    pass`, since a prompt ends
  with the docstring); the docstring of the function under test (else the first string
  statement of its body: HumanEval/115 has `import math` before it) is cleaned with
  `codecl.data.clean.first_paragraph`, the same cleaning as training descriptions.
- JavaScript (HumanEval-X, MBXP): the `/* ... */` or `/** ... */` comment right before the
  declaration of the function under test, its delimiters and `*` margins removed, then the
  same `first_paragraph`.
Example lines (`>>> f(1)`, MBXP's `> f(1)`) end the description.
The model never sees the signature or the name; it writes a whole function.

How the program under test is assembled from the generated function (`program_parts`):
- header: the prompt's text before the function under test, i.e. before its `def` line
  (Python: imports such as `from typing import List`, helper functions like HumanEval/10's
  `is_palindrome`), or before the comment that documents it (JavaScript);
- the generated code, as the model wrote it;
- a binding line when the generated code does not define the function under test by name
  (the model cannot know the name from the description): the first top-level function it
  defines is bound to it, `entry_point = generated_name` (Python, found with `ast`) or
  `const entryPoint = generatedName;` (JavaScript, found by a declaration regex). Nothing is
  added when the code defines the name itself, or defines no function (it then fails);
- the benchmark's test, then `check(entry_point)` for HumanEval/MBXP Python.
That is a synthetic `Problem` whose prompt is the header and whose completion is the rest, so
`programs.assemble_program` (header + completion + "\\n" + test [+ check]) and the sandbox are
reused unchanged, and so is `run_problem_samples`. Greedy decoding gives one sample a problem:
`pass_at_1` is the share of problems whose checks ran to their end and passed within
`exec_timeout_s` (the harness's proof and exit 0, see `programs.py`); a sample that cannot
start, crashes or hits a limit counts as failed and the stage goes on.
"""
from __future__ import annotations

import ast
import inspect
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

from codecl.data.clean import first_paragraph
from codecl.errors import ConfigError
from codecl.execution.benchmark import Problem

METRIC = "pass_at_1"
SKIPPED_NOTE = "skipped: code execution not allowed"

# A top-level (column 0) function declaration: `function f(`, or `const f = ` an arrow function or function expression.
_JS_DECLARATION = re.compile(
    r"^(?:export\s+)?(?:(?:const|let|var)\s+([A-Za-z_$][\w$]*)\s*=\s*(?:async\s*)?(?:function\b|\([^)]*\)\s*=>|[A-Za-z_$][\w$]*\s*=>)"
    r"|(?:async\s+)?function\s*\*?\s*([A-Za-z_$][\w$]*)\s*\()",
    re.MULTILINE,
)
_PY_DEF = re.compile(r"^(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)


@dataclass(frozen=True)
class InRunProblem:
    """A benchmark problem as a `codecl run` stage evaluates it."""

    problem: Problem
    entry_point: str
    """Name of the function under test (the benchmark's `entry_point`, else the prompt's last declaration)."""
    description: str
    """The model's input: the docstring's first paragraph, cleaned as in training."""
    header: str
    """Prompt text before the function under test (imports, helpers)."""


# ---------------------------------------------------------------- descriptions and headers


def _python_function(prompt: str, name: str | None):
    """The top-level function `name` (else the last one) of a prompt that ends in its docstring."""
    lines = [line for line in prompt.splitlines() if line.strip()]
    indent = re.match(r"[ \t]*", lines[-1]).group(0) if lines else ""
    body = f"{indent or '    '}pass\n"  # the docstring's own indentation: MBXP indents with tabs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tree = ast.parse(prompt + ("" if prompt.endswith("\n") else "\n") + body)
        except SyntaxError:
            tree = ast.parse(prompt)
    functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    named = [f for f in functions if f.name == name] if name else []
    if named or functions:
        return (named or functions)[-1]
    raise ValueError("the prompt defines no top-level function")


def _python_docstring(func) -> str:
    """The docstring, else the first string statement of the body (HumanEval/115 puts `import math` first)."""
    strings = [n.value.value for n in func.body
               if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)]
    return inspect.cleandoc(strings[0]) if strings else ""


def _cut(text: str, line: int) -> str:
    """`text` before its 1-based `line`."""
    return "".join(text.splitlines(keepends=True)[: line - 1])


def _block_comment_text(comment: str) -> str:
    body = comment.strip()
    body = body[3:] if body.startswith("/**") else body[2:] if body.startswith("/*") else body
    body = body[:-2] if body.endswith("*/") else body
    return "\n".join(re.sub(r"^\s*\*(?!/) ?", "", line) for line in body.splitlines())


def _before_examples(docstring: str) -> str:
    """Text before the first example line (`>>> f(1)`, MBXP's `> f(1)`)."""
    lines = docstring.splitlines()
    cut = next((i for i, line in enumerate(lines) if line.lstrip().startswith(">")), len(lines))
    return "\n".join(lines[:cut])


def prepare_problem(problem: Problem) -> InRunProblem:
    """Description, header and entry point of one problem (see the module docstring).

    Raises ValueError when the prompt has no function under test or no description.
    """
    prompt = problem.prompt
    if problem.language == "python":
        func = _python_function(prompt, problem.entry_point)
        first_line = min([func.lineno] + [d.lineno for d in func.decorator_list])
        header, docstring = _cut(prompt, first_line), _python_docstring(func)
        entry = problem.entry_point or func.name
    else:
        declarations = list(_JS_DECLARATION.finditer(prompt))
        if problem.entry_point:
            declarations = [m for m in declarations if problem.entry_point in m.groups()] or declarations
        if not declarations:
            raise ValueError("the prompt declares no function")
        decl = declarations[-1]
        entry = problem.entry_point or decl.group(1) or decl.group(2)
        before = prompt[: decl.start()]
        start = before.rfind("/*") if before.rstrip().endswith("*/") else -1  # block comments do not nest
        header = before[:start] if start >= 0 else before
        docstring = _block_comment_text(before[start:]) if start >= 0 else ""
    description = first_paragraph(_before_examples(docstring))
    if not description:
        raise ValueError("no description: the function under test has no docstring or comment")
    return InRunProblem(problem, entry, description, header)


# ---------------------------------------------------------------- programs


def _defined_functions(code: str, language: str) -> list[str]:
    if language == "python":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(code)
        except (SyntaxError, ValueError):
            return [m.group(1) for m in _PY_DEF.finditer(code)]
        return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return [m.group(1) or m.group(2) for m in _JS_DECLARATION.finditer(code)]


def completion_for(item: InRunProblem, generated: str) -> str:
    """What follows the header: the generated code, plus a binding line when it names the function otherwise."""
    names = _defined_functions(generated, item.problem.language)
    if not names or item.entry_point in names:
        return generated
    binding = f"{item.entry_point} = {names[0]}" if item.problem.language == "python" else f"const {item.entry_point} = {names[0]};"
    return generated.rstrip("\n") + "\n" + binding + "\n"


def program_parts(item: InRunProblem, generated: str) -> tuple[Problem, str]:
    """(synthetic problem whose prompt is the header, completion) for `run_problem_samples`."""
    p = item.problem
    synthetic = Problem(task_id=p.task_id, language=p.language, prompt=item.header, test=p.test,
                        entry_point=p.entry_point, canonical_solution=None)
    return synthetic, completion_for(item, generated)


def canonical_function(item: InRunProblem) -> str:
    """The benchmark's reference as a whole function (the prompt from the function under test on,
    plus the canonical body): what a perfect model would generate. For tests."""
    return item.problem.prompt[len(item.header):] + (item.problem.canonical_solution or "")


# ---------------------------------------------------------------- the run's evaluator


def parse_exec_benchmarks(items) -> dict[str, str]:
    """`["python=PATH", ...]` -> {"python": "PATH"} (the config validates the format)."""
    return {lang.strip(): source.strip() for lang, source in (item.split("=", 1) for item in items)}


@dataclass
class InRunExecutor:
    """Benchmarks loaded once per run and a sandbox reused across stages."""

    problems: dict[str, list[InRunProblem]]
    """task (language) -> the problems evaluated for it."""
    sandbox: object
    log: Callable[[dict], None] = lambda event: None
    skipped: dict[str, list[str]] = field(default_factory=dict)
    """task -> task_ids left out (no function under test or no description)."""

    @classmethod
    def from_config(cls, cfg, log: Callable[[dict], None] = lambda event: None) -> "InRunExecutor | None":
        """The executor of a run, or None when the run has no benchmark for its tasks or is not
        allowed to execute code (then an `exec_skipped` event is logged once)."""
        wanted = {t: s for t, s in parse_exec_benchmarks(cfg.eval.exec_benchmarks).items() if t in cfg.tasks}
        if not wanted:
            return None
        if not cfg.eval.allow_code_execution:
            log({"event": "exec_skipped", "metric": METRIC, "tasks": sorted(wanted), "reason": SKIPPED_NOTE,
                 "hint": "set eval.allow_code_execution=true to run generated code in the sandbox"})
            return None
        from codecl.execution.benchmark import load_benchmark
        from codecl.execution.sandbox import Sandbox, SandboxConfig

        sandbox = Sandbox(SandboxConfig(timeout_s=cfg.eval.exec_timeout_s))
        problems, skipped = {}, {}
        for task, source in wanted.items():
            loaded = [p for p in load_benchmark(source).values()]
            other = sorted({p.language for p in loaded if p.language != task})
            if other:
                raise ConfigError(f"eval.exec_benchmarks {task}={source}: the benchmark holds {', '.join(other)} problems, not {task}")
            if cfg.eval.exec_max_problems is not None:
                loaded = loaded[: cfg.eval.exec_max_problems]
            problems[task], skipped[task] = [], []
            for p in loaded:
                try:
                    problems[task].append(prepare_problem(p))
                except (ValueError, SyntaxError):
                    skipped[task].append(p.task_id)
            sandbox.check_language(task)  # fails now, in one line, when e.g. node is missing
        executor = cls(problems, sandbox, log, skipped)
        log({"event": "exec_setup", "benchmarks": wanted, "problems": {t: len(v) for t, v in problems.items()},
             "unusable": {t: v for t, v in skipped.items() if v}, "timeout_s": cfg.eval.exec_timeout_s,
             "isolation": sandbox.isolation()})
        return executor

    @classmethod
    def for_retention(cls, cfg, log: Callable[[dict], None] = lambda event: None) -> "tuple[InRunExecutor | None, dict[str, str]]":
        """The executor of `eval.retention` (problems keyed by benchmark NAME) and each benchmark's language; None
        when nothing is configured or execution is not allowed (an `exec_skipped` event is logged)."""
        items = parse_exec_benchmarks(cfg.eval.retention)
        if not items:
            return None, {}
        from codecl.execution.benchmark import load_benchmark

        problems, languages, skipped = {}, {}, {}
        for name, source in items.items():
            loaded = list(load_benchmark(source).values())
            found = sorted({p.language for p in loaded})
            if len(found) != 1:
                raise ConfigError(f"eval.retention {name}={source}: needs the problems of one language, found {', '.join(found) or 'none'}")
            languages[name] = found[0]
            if cfg.eval.exec_max_problems is not None:
                loaded = loaded[: cfg.eval.exec_max_problems]
            problems[name], skipped[name] = [], []
            for p in loaded:
                try:
                    problems[name].append(prepare_problem(p))
                except (ValueError, SyntaxError):
                    skipped[name].append(p.task_id)
        if not cfg.eval.allow_code_execution:
            log({"event": "exec_skipped", "metric": "retention", "benchmarks": sorted(items), "reason": SKIPPED_NOTE,
                 "hint": "set eval.allow_code_execution=true to run generated code in the sandbox"})
            return None, languages
        from codecl.execution.sandbox import Sandbox, SandboxConfig

        sandbox = Sandbox(SandboxConfig(timeout_s=cfg.eval.exec_timeout_s))
        for language in set(languages.values()):
            sandbox.check_language(language)
        log({"event": "retention_setup", "benchmarks": items, "problems": {t: len(v) for t, v in problems.items()}})
        return cls(problems, sandbox, log, skipped), languages

    def pass_at_1(self, task: str, generate: Callable[[list[str]], list[str]], stage: str = "") -> float | None:
        """Generate one function per problem of `task` with `generate(descriptions)` and run it;
        None when the task has no benchmark."""
        from codecl.execution.evaluate import run_problem_samples, summarize

        items = self.problems.get(task)
        if not items:
            return None
        started = time.perf_counter()
        generated = generate([item.description for item in items])
        generation_s = time.perf_counter() - started
        problems, completions = {}, {}
        for item, code in zip(items, generated):
            synthetic, completion = program_parts(item, code)
            problems[synthetic.task_id], completions[synthetic.task_id] = synthetic, [completion]
        results = run_problem_samples(problems, completions, sandbox=self.sandbox)
        summary = summarize(results, [1])
        value = summary["pass_at_k"]["1"]
        self.log({"event": "exec", "stage": stage, "task": task, "problems": summary["problems"], METRIC: value,
                  "results": summary["results"], "generation_seconds": round(generation_s, 3),
                  "execution_seconds": round(time.perf_counter() - started - generation_s, 3)})
        return value
