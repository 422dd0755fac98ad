"""Hostile tests of the registries, plugins, eval.metrics and the model card: plugin specs that are wrong,
config sections that are wrong, metrics that misbehave. Each was a bug (the comment says what it did)."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from importlib.metadata import EntryPoint

import numpy as np
import pytest

from codecl.config import MethodConfig, from_dict, load_config, to_dict
from codecl.errors import CodeclError, ConfigError
from codecl.registry import METHODS, METRICS, MethodSpec, MetricSpec, Registry
from helpers import run_codecl


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    description: str = ""


def _registry_with(monkeypatch, entries: dict[str, str], reserved=None) -> Registry:
    eps = [EntryPoint(name, value, "test.hostile") for name, value in entries.items()]
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group=None: [e for e in eps if e.group == group])
    return Registry("thing", Spec, group="test.hostile", reserved=reserved)


BAD_NAMES = [Spec("a.b"), Spec("a,b"), Spec("../escape"), Spec(""), Spec("has space"), Spec(None)]
GOOD = Spec("good-one_2")
SECTION = Spec("block")


FIRST, SECOND = Spec("same", "first plugin"), Spec("same", "second plugin")


def _exits():
    raise SystemExit(3)


# ---------------------------------------------------------------- plugin specs


def test_plugin_names_must_be_usable_as_keys_list_items_and_folders(monkeypatch):
    """Was: any string was a name — `a.b` (unreachable as `method.a.b.rank`), `a,b` (split by --methods), `../escape`
    (a run folder outside the output dir)."""
    reg = _registry_with(monkeypatch, {"bad": f"{__name__}:BAD_NAMES", "good": f"{__name__}:GOOD"})
    assert reg.names() == ["good-one_2"]
    assert "is not a valid name" in reg.broken()["bad"]


def test_plugin_method_may_not_take_a_config_section_name(monkeypatch):
    """Was: a plugin method `block` (or `merge`, `plugins`) registered, and its `method.block` section was codecl's
    BlockConfig (`MethodConfig.section('block')`)."""
    reg = _registry_with(monkeypatch, {"block": f"{__name__}:SECTION"}, reserved=METHODS.reserved)
    assert "block" not in reg.names() and "reserved" in reg.broken()["block"]
    sections = {f.name for f in dataclasses.fields(MethodConfig)}
    assert sections <= set(METHODS.names()) | set(METHODS.reserved)  # every section name is taken or reserved


def test_plugin_language_may_not_take_a_run_folder_name():
    from codecl.config import _RESERVED_NAMES
    from codecl.languages import LANGUAGES

    assert set(_RESERVED_NAMES) <= set(LANGUAGES.reserved)


def test_two_plugins_taking_one_name_are_both_refused(monkeypatch):
    """Was: whichever entry point came first took the name, and the other was only listed as broken: which plugin ran
    depended on the order of sys.path."""
    reg = _registry_with(monkeypatch, {"a": f"{__name__}:FIRST", "b": f"{__name__}:SECOND", "good": f"{__name__}:GOOD"})
    assert "same" not in reg and reg.names() == ["good-one_2"]
    with pytest.raises(ConfigError, match=r"'same': claimed by two plugins: entry point a = .* and entry point b = .*uninstall one"):
        reg.get("same")


@pytest.mark.parametrize("kw,match", [(dict(block="sometimes", model_class="x:Y"), "block must be None, 'per_task' or 'shared'"),
                                      (dict(block=None, kind="nosuch"), "kind must be one of modules")])
def test_method_spec_fields_are_checked(kw, match):
    """Was: an unknown `block` value silently added a block; an unknown `kind` failed as `KeyError: 'nosuch'` when built."""
    with pytest.raises(ValueError, match=match):
        MethodSpec("weird", True, description="d", **kw)


def test_plugin_exiting_at_import_is_broken_not_fatal(monkeypatch):
    """Was: `sys.exit()` in a plugin's import ended every codecl command, `codecl list` included."""
    reg = _registry_with(monkeypatch, {"quits": f"{__name__}:_exits", "good": f"{__name__}:GOOD"})
    assert reg.names() == ["good-one_2"] and "SystemExit" in reg.broken()["quits"]


# ---------------------------------------------------------------- metrics


def _metric(name, compute, **kw):
    spec = MetricSpec(name, compute, "hostile test metric", **kw)
    METRICS.register(spec, origin="test")
    return spec


@pytest.fixture
def metrics():
    names = []

    def add(name, compute, **kw):
        names.append(name)
        return _metric(name, compute, **kw)

    yield add
    for name in names:
        METRICS.unregister(name)


@pytest.mark.parametrize("field", ["prediction", "id", "reference", "truncated", "loss", "exact_match", "syntax_ok"])
def test_per_example_field_may_not_overwrite_a_predictions_field(metrics, field):
    """Was: a plugin metric with `per_example_field: prediction` replaced every prediction in the predictions lines
    (and one with `exact_match` replaced the built-in's values), silently."""
    metrics("clashing", lambda h, r, l: (0.5, [0.5] * len(h)), per_example_field=field)
    with pytest.raises(ConfigError, match=f"predictions field '{field}'"):
        load_config("smoke", overrides=["eval.metrics=[bleu,clashing]"])


def test_metric_named_like_a_predictions_field_is_refused(metrics):
    metrics("source", lambda h, r, l: (0.5, [0.5] * len(h)))
    with pytest.raises(ConfigError, match="predictions field 'source'"):
        load_config("smoke", overrides=["eval.metrics=[source]"])


def _boom(h, r, l):
    raise KeyError("a plugin bug")


@pytest.mark.parametrize("compute,error,match", [
    (_boom, CodeclError, r"metric 'hostile' failed on 1 python outputs: KeyError: 'a plugin bug'"),
    (lambda h, r, l: (0.5, None, "extra"), ValueError, "tuple of 3 items"),
    (lambda h, r, l: (math.nan, None), ValueError, "0–1 scale"),
    (lambda h, r, l: (0.5, (x for x in [1.0])), ValueError, "as generator"),
    (lambda h, r, l: (0.5, [1.0, 2.0]), ValueError, "2 per-example values for 1 hypotheses"),
    (lambda h, r, l: (0.5, [math.nan]), ValueError, "per-example value nan"),
    (lambda h, r, l: (0.5, [{"a": 1}]), ValueError, "per-example value"),
])
def test_misbehaving_metric_fails_with_its_name(metrics, compute, error, match):
    """Was: a raising metric ended the run with the plugin's bare exception (no metric named); a 3-tuple gave
    'too many values to unpack'; NaN per-example values were written as invalid JSON to the predictions lines."""
    from codecl.evaluation.metrics import score_with_examples

    metrics("hostile", compute)
    with pytest.raises(error, match=match):
        score_with_examples(["x = 1"], ["x = 1"], "python", ("bleu", "hostile"))


def test_numpy_scores_are_accepted_as_numbers(metrics):
    """A metric computed with numpy (np.float32 is not a Python float) is a number on the 0–1 scale."""
    from codecl.evaluation.metrics import score_with_examples

    metrics("npmetric", lambda h, r, l: (np.float32(0.25), [np.float64(0.25)] * len(h)))
    scores, examples = score_with_examples(["x = 1"], ["x = 1"], "python", ("bleu", "npmetric"))
    assert scores["npmetric"] == 0.25 and type(scores["npmetric"]) is float
    json.dumps(scores)


# ---------------------------------------------------------------- plugin config sections


@dataclasses.dataclass(frozen=True)
class HostileConfig:
    rank: int = 2


@pytest.fixture
def plugin_method():
    from codecl.methods.continual import ContinualModel

    spec = MethodSpec("hostile_method", True, None, "test", model_class=ContinualModel, config_class=HostileConfig)
    METHODS.register(spec, origin="entry point hostile_method = tests (group codecl.methods, hostile)")
    yield spec
    METHODS.unregister(spec.name)


@pytest.mark.parametrize("override,match", [
    ("method.plugins=5", "method.plugins must be a mapping"),  # was: TypeError: 'int' object is not iterable (exit 1)
    ("method.plugins.lora.rank=3", "'lora' is codecl's own method, not a plugin's; its settings are method.lora"),  # was: method.lora replaced by {'rank': 3}
    ("method.full_layer.x=3", "'full_layer' is codecl's own method"),  # was: kept as a plugin section of a built-in
])
def test_plugin_sections_of_codecl_names_are_refused(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("smoke", overrides=[override])


def test_section_of_a_plugin_that_is_not_installed_says_so():
    """Was: reading back a plugin run without the plugin said only 'method.x is not a known key'."""
    data = to_dict(load_config("smoke"))
    data["method"]["gone_method"] = {"rank": 3}
    data["eval"]["metrics"] = ["bleu", "gone_metric"]
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    message = str(info.value)
    assert "'gone_method' is a plugin's method, that plugin is not installed" in message
    assert "'gone_metric' is a plugin's metric, that plugin is not installed" in message


def test_model_card_shows_a_plugin_methods_own_settings(plugin_method):
    """Was: the card of a plugin LoRA method gave `method.lora`'s rank as the adapters' rank, not the plugin's
    `method.<name>` settings the run trained with."""
    from codecl.export import model_card

    cfg = load_config("smoke", overrides=["methods=[hostile_method]", "method.hostile_method.rank=7", "eval.split=valid"])
    results = {"base_model": {"name": "embedded", "parameters": 100, "fingerprint": "f"}, "tasks": ["python", "javascript"]}
    run = {"method": "hostile_method", "seed": 1, "stages": ["base", "python", "javascript"],
           "scores": {"bleu": [[0.1, 0.2], [0.3, None], [0.4, 0.5]], "codebleu": [[None, None]] * 3}}
    info = {"auto_class": "AutoModelForSeq2SeqLM", "lora_merged": ["python"], "codecl_version": "0", "modules": "python",
            "parameters": 100, "order": ["python", "javascript"]}
    card = model_card(results, run, "python", cfg, info)
    assert "`method.hostile_method` (the plugin method's own settings): rank=7." in card
    assert "(as configured in `method.lora`)" not in card
    assert "| python | 0.4000 | n/a |" in card  # a null score is n/a
    assert "valid split" in card and "test split" not in card  # was: "test split" whatever eval.split said


def test_plugin_method_defaults_are_written_and_its_origin_recorded(plugin_method):
    """Was: a plugin method run without `--set method.<name>...` wrote no section to config.yaml, so resuming after the
    plugin changed its defaults went on silently with other settings; provenance did not say which plugin made the run."""
    from codecl.provenance import plugin_origins

    cfg = load_config("smoke", overrides=["methods=[lora,hostile_method]"])
    assert to_dict(cfg)["method"]["hostile_method"] == {"rank": 2}
    assert from_dict(to_dict(cfg)) == cfg
    assert plugin_origins(cfg) == {"method hostile_method": "entry point hostile_method = tests (group codecl.methods, hostile)"}
    assert "plugins" not in to_dict(load_config("smoke"))["method"]


# ---------------------------------------------------------------- resume


def test_resume_refusal_names_the_changed_setting():
    """Was: a changed `eval.metrics` printed the whole `eval` section twice."""
    from codecl.experiment import _config_diff

    saved = to_dict(load_config("smoke"))["eval"]
    now = to_dict(load_config("smoke", overrides=["eval.metrics=[bleu,codebleu]"]))["eval"]
    diff = _config_diff("eval", saved, now)
    assert diff.startswith("eval.metrics: [") and "split" not in diff


# ---------------------------------------------------------------- through pip and the CLI

HOSTILE_PLUGIN = '''
from codecl.registry import MethodSpec, MetricSpec
print("hostile plugin loading")  # was: on stdout, before `codecl list --json`'s JSON
BLOCK = MethodSpec("block", True, None, "named like a config section", model_class="codecl.methods.continual:ContinualModel")
def none():
    return None
PRED = MetricSpec("pred", lambda h, r, l: (0.5, [0.5] * len(h)), "overwrites predictions", per_example_field="prediction")
'''


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory):
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("hostile-plugin")
    source = root / "src"
    (source / "codecl_hostile_plugin").mkdir(parents=True)
    (source / "codecl_hostile_plugin" / "__init__.py").write_text(HOSTILE_PLUGIN)
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "codecl-hostile-plugin"\nversion = "0.0.1"\n'
        '[project.entry-points."codecl.methods"]\nblock = "codecl_hostile_plugin:BLOCK"\nnothing = "codecl_hostile_plugin:none"\n'
        '[project.entry-points."codecl.metrics"]\npred = "codecl_hostile_plugin:PRED"\n'
        '[tool.setuptools]\npackages = ["codecl_hostile_plugin"]\n')
    target = root / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                           "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"pip install failed:\n{proc.stderr[-2000:]}")
    shutil.rmtree(source / "build", ignore_errors=True)
    return target


def test_cli_list_and_params_with_a_hostile_plugin(hostile_site, monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", str(hostile_site))
    proc = run_codecl("list", "methods", "--json", cache=tmp_path)
    listed = json.loads(proc.stdout)  # stdout is the JSON only
    assert "hostile plugin loading" in proc.stderr
    assert "block" not in {row["name"] for row in listed["registered"]}
    assert "reserved" in listed["broken"]["block"] and "NoneType" in listed["broken"]["nothing"]
    proc = run_codecl("list", "methods", cache=tmp_path)
    assert proc.returncode == 0 and "NOT LOADED" in proc.stderr and "NOT LOADED" not in proc.stdout
    proc = run_codecl("params", "--preset", "smoke", "--set", "eval.metrics=[bleu,pred]", cache=tmp_path, check=False)
    assert proc.returncode == 2 and "predictions field 'prediction'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_codecl("params", "--preset", "smoke", "--set", "methods=[block]", cache=tmp_path, check=False)
    assert proc.returncode == 2 and "reserved" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- TypeScript


@pytest.mark.parametrize("code,ok", [
    ("@Component({selector: 'x'})\nclass A { @Input() name: string = ''; }", True),
    ("function f<T = string>(x: T): T { return x; }", True),
    ("const c = { a: 1 } satisfies Record<string, number>;", True),
    ("function g(o?: {a?: {b: number}}) { return o?.a?.b ?? 0; }", True),
    ("abstract class S { abstract area(): number; }", True),
    ("enum Color { Red, Green = 'g' }", True),
    ("function h(x: string): string;\nfunction h(x: number): number;\nfunction h(x: any) { return x; }", True),
    ("public foo(x: number): number { return x + 1; }", True),
    ("const e = <div className=\"a\">hi</div>;", False),  # TSX is not TypeScript
    ("function f(x: number { return x; }", False),
    ("} {", False),
])
def test_typescript_syntax_check(code, ok):
    from codecl.languages import parse_ok

    assert parse_ok(code, "typescript") is ok


def test_typescript_declaration_files_are_not_sources(tmp_path):
    """Was: `.d.ts` was skipped but `.d.mts` / `.d.cts` (declaration files of ES / CommonJS modules) were read."""
    (tmp_path / "src").mkdir()
    for name in ("a.d.ts", "b.d.mts", "c.d.cts"):
        (tmp_path / "src" / name).write_text("export declare function f(a: number): number;\n")
    proc = run_codecl("data", "build", "--languages", "typescript", "--source", str(tmp_path / "src"), "--output", str(tmp_path / "out"),
                      cache=tmp_path / "cache", check=False)
    assert proc.returncode == 3 and "no typescript source files" in proc.stderr


@pytest.mark.slow
def test_typescript_and_text_tasks_score_codebleu_null_end_to_end(tmp_path):
    """A TypeScript task of your own (codebleu has no TypeScript) and a code → text task: codebleu is null in every cell,
    and results.json validates, the report is written and `codecl export` writes a card with n/a."""
    pytest.importorskip("codebleu")
    from codecl.results import validate_run_dir
    from helpers import write_jsonl

    ops = ["+", "-", "*", "/"]
    ts = [{"input": f"combine a and b with {ops[i % 4]} then add {i}", "language": "typescript",
           "target": f"function f{i}(a: number, b: number): number {{ return a {ops[i % 4]} b + {i}; }}"} for i in range(40)]
    nl = [{"input": f"def g{i}(a, b):\n    return a * b + {i}", "target": f"multiply a and b and add {i}"} for i in range(40)]
    for name, rows in (("ts", ts), ("summ", nl)):
        for split, part in (("train", rows[:24]), ("valid", rows[24:32]), ("test", rows[32:])):
            write_jsonl(tmp_path / name / f"{split}.jsonl", part)
    src = tmp_path / "tssrc"
    src.mkdir()
    (src / "lib.ts").write_text("".join(f"/**\n * Adds {i} to a.\n */\nexport function add{i}(a: number): number {{\n  return a + {i};\n}}\n"
                                        for i in range(30)))
    out, cache = tmp_path / "run", tmp_path / "cache"
    run_codecl("run", "--preset", "smoke", "--methods", "lora", "--tasks", f"ts={tmp_path / 'ts'},summ={tmp_path / 'summ'}",
               "--set", "data.tasks.ts.language=typescript", "--set", "data.tasks.summ.direction=code_to_nl",
               "--set", f"data.extra_sources=[{src}]", "--set", "eval.metrics=[bleu,codebleu]", "--output-dir", str(out), "--quiet",
               cache=cache)
    results = validate_run_dir(out, complete=True)
    (run,) = results["runs"]
    assert all(v is None for row in run["scores"]["codebleu"] for v in row) and run["final_average"]["codebleu"] is None
    assert run["scores"]["syntax_pass"][-1][1] is None  # text outputs have no syntax
    assert "**codebleu** (higher is better)" in (out / "report.md").read_text()
    run_codecl("export", str(out), "--method", "lora", "--task", "ts", "--output", str(tmp_path / "export"), cache=cache)
    assert "| ts | " in (tmp_path / "export" / "README.md").read_text() and "n/a" in (tmp_path / "export" / "README.md").read_text()
