"""Plugins: a package installed with pip adds a method and a metric to codecl through entry points,
with no change inside codecl (`codecl.registry`; the package is `examples/plugin`).

The package is installed once per module with `pip install --no-deps --no-build-isolation --target`
into a folder on PYTHONPATH (the `codecl` subprocesses see it; this process does not, so the
registries here stay codecl's own).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from codecl.config import load_config
from helpers import run_codecl

PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "plugin"
METRICS = "eval.metrics=[bleu,exact_match,syntax_pass,bleu_sentence_smoothed,token_f1]"


def _pip_install(source: Path, target: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                           "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"pip install {source} failed:\n{proc.stderr[-2000:]}")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder holding the installed example plugin and a broken one (its entry point names a missing object)."""
    root = tmp_path_factory.mktemp("plugins")
    source = root / "src"
    shutil.copytree(PLUGIN, source / "example")  # pip builds in the source tree: not in the repository
    broken = source / "broken"
    (broken / "codecl_broken_plugin").mkdir(parents=True)
    (broken / "codecl_broken_plugin" / "__init__.py").write_text("raise ImportError('this plugin needs libfoo 9')\n")
    (broken / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "codecl-broken-plugin"\nversion = "0.0.1"\n'
        '[project.entry-points."codecl.methods"]\nghost = "codecl_broken_plugin:METHOD"\n'
        '[tool.setuptools]\npackages = ["codecl_broken_plugin"]\n')
    target = root / "site"
    for package in ("example", "broken"):
        _pip_install(source / package, target)
    assert (target / "codecl_example_plugin" / "__init__.py").is_file()
    return target


@pytest.fixture
def plugin_env(site, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(site))
    return site


def test_not_installed_means_unknown():
    """Without the package, the names do not exist (this process never loads it)."""
    with pytest.raises(Exception, match="lora_qv"):
        load_config("smoke", overrides=["methods=[lora_qv]"])


def test_list_shows_plugins_and_broken_ones(plugin_env, tmp_path):
    listed = json.loads(run_codecl("list", "methods", "--json", cache=tmp_path).stdout.strip().splitlines()[-1])
    origins = {row["name"]: row["origin"] for row in listed["registered"]}
    assert origins["lora"] == "codecl"
    assert "lora_qv" in origins and "codecl_example_plugin:METHOD" in origins["lora_qv"] and "codecl-example-plugin 0.1.0)" in origins["lora_qv"]
    assert "ghost" in listed["broken"] and "libfoo 9" in listed["broken"]["ghost"]
    metrics = json.loads(run_codecl("list", "metrics", "--json", cache=tmp_path).stdout.strip().splitlines()[-1])
    assert "token_f1" in {row["name"] for row in metrics["registered"]}


def test_broken_plugin_is_a_clear_error(plugin_env, tmp_path):
    proc = run_codecl("params", "--preset", "smoke", "--set", "methods=[ghost]", cache=tmp_path, check=False)
    assert proc.returncode == 2
    assert "ghost" in proc.stderr and "codecl_broken_plugin:METHOD" in proc.stderr and "libfoo 9" in proc.stderr
    assert "Traceback" not in proc.stderr


def _qv_lora_parameters(rank: int) -> int:
    """LoRA on q and v of every attention of the smoke preset's embedded T5: encoder self-attention,
    decoder self- and cross-attention; each projection d_model -> d_model gets r·(d_model + d_model)."""
    shape = load_config("smoke").model.embedded
    attentions = 3 * shape.num_layers
    return attentions * 2 * rank * (shape.d_model + shape.d_model)


def test_plugin_config_section_is_validated(plugin_env, tmp_path):
    proc = run_codecl("params", "--preset", "smoke", "--set", "methods=[lora_qv]", "--set", "method.lora_qv.rank=0",
                      cache=tmp_path, check=False)
    assert proc.returncode == 2 and "method.lora_qv" in proc.stderr and "rank must be an integer >= 1" in proc.stderr
    proc = run_codecl("params", "--preset", "smoke", "--set", "methods=[lora_qv]", "--set", "method.lora_qv.rnak=3",
                      cache=tmp_path, check=False)
    assert proc.returncode == 2 and "method.lora_qv.rnak is not a known key" in proc.stderr


def test_plugin_method_params(plugin_env, tmp_path):
    out = run_codecl("params", "--preset", "smoke", "--set", "methods=[lora,lora_qv]", "--set", "method.lora_qv.rank=2",
                     cache=tmp_path).stdout.strip().splitlines()[-1]
    report = json.loads(out)["methods"]
    assert report["lora_qv"]["trainable_per_task"] == _qv_lora_parameters(2)
    assert report["lora_qv"]["lora_rank"] == 2
    assert report["lora"]["trainable_per_task"] > report["lora_qv"]["trainable_per_task"]  # codecl's lora: q,k,v,o,wi,wo, r=16


def test_plugin_method_and_metric_run_through_the_cli(plugin_env, tmp_path):
    """`codecl run` trains the plugin method with its own section and scores the plugin metric; the
    metric's matrix equals token F1 recomputed from the saved predictions."""
    out = tmp_path / "run"
    run_codecl("run", "--preset", "smoke", "--methods", "lora_qv", "--seeds", "3", "--output-dir", str(out),
               "--set", "method.lora_qv.rank=2", "--set", METRICS, cache=tmp_path / "cache")
    results = json.loads((out / "results.json").read_text())
    (run,) = results["runs"]
    assert run["method"] == "lora_qv" and run["stages"] == ["base", *results["tasks"]]
    assert set(run["trainable_parameters"].values()) == {_qv_lora_parameters(2)}
    adapter = json.loads((out / "lora_qv" / "seed-3" / results["tasks"][0] / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["q", "v"] and adapter["r"] == 2
    sys.path.insert(0, str(plugin_env))
    try:
        from codecl_example_plugin import token_f1_scores
    finally:
        sys.path.remove(str(plugin_env))
    matrix = run["scores"]["token_f1"]
    assert len(matrix) == len(run["stages"])
    for s, stage in enumerate(run["stages"]):
        for j, task in enumerate(results["tasks"]):
            folder = out / "predictions" / "base" if stage == "base" else out / "lora_qv" / "seed-3" / "predictions" / stage
            lines = [json.loads(line) for line in (folder / f"{task}.jsonl").read_text().splitlines()]
            expected = token_f1_scores([x["prediction"] for x in lines], [x["reference"] for x in lines])
            assert matrix[s][j] == pytest.approx(sum(expected) / len(expected), abs=1e-9)
            assert [x["token_f1"] for x in lines] == pytest.approx(expected, abs=1e-12)
    assert "token_f1" in run["final_average"]
    plugins = results["provenance"]["plugins"]
    assert set(plugins) == {"method lora_qv", "metric token_f1"} and all("codecl-example-plugin 0.1.0)" in v for v in plugins.values())
    report = (out / "report.md").read_text()
    assert "lora_qv" in report and "token_f1" in report
