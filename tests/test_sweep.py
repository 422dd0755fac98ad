"""Sweeps (codecl.sweep): expansion of `sweep` into validated run configs, sweep.md, the CLI option."""
import pytest

from codecl.config import load_config, preset_names
from codecl.errors import ConfigError
from codecl.results import save_results
from codecl.sweep import expand_sweep, render_sweep, run_sweep, sweep_axes


def test_axes_parse_values_as_yaml():
    assert sweep_axes(["method.lora.rank=4, 8,match_block", "train.lr=0.001"]) == [("method.lora.rank", [4, 8, "match_block"]), ("train.lr", [0.001])]


def test_expansion_is_the_product_each_in_its_own_folder():
    cfg = load_config("smoke", output_dir="out", sweep=["method.block.position=1,-1", "method.block.init=identity,random"])
    points = expand_sweep(cfg)
    assert [label for label, _ in points] == [
        "method.block.position=1,method.block.init=identity", "method.block.position=1,method.block.init=random",
        "method.block.position=-1,method.block.init=identity", "method.block.position=-1,method.block.init=random"]
    label, point = points[1]
    assert (point.method.block.position, point.method.block.init) == (1, "random") and point.sweep == ()
    assert point.output_dir == f"out/{label}" and point.train == cfg.train
    assert expand_sweep(load_config("smoke")) == []


@pytest.mark.parametrize("items, message", [
    (["method.lora.rank=4,0"], r"sweep point method.lora.rank=0: method.lora.rank must be >= 1"),
    (["method.lora.rnak=4"], r"sweep: method.lora.rnak is not a config key"),
    (["train.lr.x=1"], r"train.lr.x is not a config key \(lr is not a section\)"),
])
def test_every_point_is_validated_before_anything_runs(items, message):
    with pytest.raises(ConfigError, match=message):
        expand_sweep(load_config("smoke", sweep=items))


def test_bad_sweep_items_are_config_errors():
    with pytest.raises(ConfigError, match="sweep items must be KEY=V1,V2"):
        load_config("smoke", sweep=["method.lora.rank"])
    with pytest.raises(ConfigError, match="cannot sweep 'output_dir'"):
        load_config("smoke", sweep=["output_dir=a,b"])


@pytest.mark.parametrize("name", [n for n in preset_names() if load_config(n).sweep])
def test_study_presets_expand(name):
    points = expand_sweep(load_config(name))
    assert len(points) >= 2 and all(p.model.name == "embedded" and p.data.source == "embedded" for _, p in points)


def test_study_presets_exist():
    assert {"lora-rank-sweep", "block-ablation", "shared-block-freeze"} <= set(preset_names())
    ranks = [p.method.lora.rank for _, p in expand_sweep(load_config("lora-rank-sweep"))]
    assert ranks == [4, 8, 16, 32, "match_block"]
    modes = [p.method.block.shared_after_first for _, p in expand_sweep(load_config("shared-block-freeze"))]
    assert modes == ["train", "freeze"]


def test_run_sweep_runs_every_point_then_writes_sweep_md(tmp_path, monkeypatch):
    from test_report import _run, study_results

    ran = []

    def fake_run_experiment(cfg, resume, progress):  # writes what a finished run would
        ran.append((cfg.method.lora.rank, resume))
        results = study_results()
        results["runs"] = [_run("lora", 42, [[0.2, 0.05], [0.19, 0.2 + cfg.method.lora.rank / 100]], 100 * cfg.method.lora.rank, 200, 1.0)]
        save_results(tmp_path / cfg.output_dir / "results.json", results)

    monkeypatch.setattr("codecl.experiment.run_experiment", fake_run_experiment)
    monkeypatch.chdir(tmp_path)
    path = run_sweep(load_config("smoke", output_dir="sw", sweep=["method.lora.rank=4,8"]), resume=True)
    assert ran == [(4, True), (8, True)] and path.resolve() == tmp_path / "sw" / "sweep.md"
    text = path.read_text()
    assert f"| method.lora.rank=8 | lora | {(0.19 + 0.28) / 2:.4f} (1 seed) | 5.00% (1 seed) | 800 | 200 |" in text
    assert "[method.lora.rank=4](method.lora.rank=4/report.md)" in text and (tmp_path / "sw" / "sweep.yaml").is_file()


def test_render_sweep_marks_unfinished_methods():
    from test_report import study_results

    text = render_sweep([("p=1", study_results())])
    assert "| p=1 | hybrid_shared* |" in text and "| p=1 | lora | " in text and " ± " in text  # lora ran two seeds


def test_cli_sweep_option_fails_fast_on_a_bad_point(tmp_path):
    from helpers import run_codecl

    proc = run_codecl("run", "--preset", "smoke", "--output-dir", str(tmp_path / "out"), "--sweep", "method.lora.rank=2,0",
                      cache=tmp_path / "cache", check=False)
    assert proc.returncode == 2 and "sweep point method.lora.rank=0: method.lora.rank must be >= 1" in proc.stderr
    assert not (tmp_path / "out" / "method.lora.rank=2").exists()  # nothing ran
