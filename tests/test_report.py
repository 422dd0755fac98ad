"""report.md and plots/ from a synthetic results.json shaped like the design study's (codecl.evaluation.claims quotes it)."""
import json
import math
import statistics
import struct
import subprocess
import sys

import pytest

from codecl.errors import CheckpointError
from codecl.report import mean_ci95, render_report, summary_table, t_critical_95, write_report
from codecl.results import finalize_run, new_results, save_results, upsert_run

TASKS = ["python", "javascript"]
BASE = [0.0038, 0.0196]
# (method, seed, BLEU after each trained stage, trainable per task, stored, seconds per stage)
RUNS = [
    ("lora", 42, [[0.2166, 0.0500], [0.2150, 0.2489]], 589824, 1179648, 689.0),
    ("lora", 43, [[0.2200, 0.0450], [0.2100, 0.2500]], 589824, 1179648, 700.0),
    ("full_layer", 42, [[0.1927, 0.0300], [0.2046, 0.2147]], 3147264, 6294528, 651.0),
    ("hybrid", 42, [[0.2569, 0.0600], [0.2456, 0.2425]], 3737088, 7474176, 485.0),
    ("hybrid_shared", 42, [[0.2569, 0.0400]], 3737088, 3737088, 485.0),  # interrupted after stage 1
]


def _run(method, seed, rows, trainable, stored, seconds):
    trained = TASKS[: len(rows)]
    n = len(rows) + 1
    run = {
        "method": method, "seed": seed, "stages": ["base", *trained],
        "scores": {
            "bleu": [BASE, *rows],
            "exact_match": [[0.0, 0.0]] + [[0.01, 0.03]] * len(rows),
            "syntax_pass": [[0.2, 0.1]] + [[0.92, 0.81]] * len(rows),
            "bleu_sentence_smoothed": [[0.05, 0.06]] + [[0.31, 0.30]] * len(rows),
            "pass_at_1": [[0.0, None]] + [[0.12, None]] * len(rows),
        },
        "trainable_parameters": {t: trainable for t in trained},
        "stored_parameters": stored,
        "train_seconds": {t: seconds for t in trained},
        "train_samples_per_second": {t: 23.2 for t in trained},
        "peak_memory_bytes": {t: 1900523520 for t in trained},
        "loss_curve": {t: [{"step": 10, "loss": 0.6641}, {"step": 20, "loss": 0.2955}] for t in trained},
    }
    assert len(run["scores"]["bleu"]) == n
    return finalize_run(run)


def study_results():
    config = {"tasks": TASKS, "methods": ["lora", "full_layer", "hybrid", "hybrid_shared"], "seeds": [42, 43],
              "data": {"source": "embedded", "max_train_examples": 8000, "max_valid_examples": 2000},
              "model": {"name": "Salesforce/codet5-small"},
              "method": {"lora": {"rank": 16, "alpha": 32, "dropout": 0.1, "target_modules": ["q", "v"]},
                         "block": {"stack": "encoder", "position": -1, "init": "identity"}},
              "train": {"lr": 0.0005, "batch_size": 8, "epochs": 2, "grad_clip": 1.0},
              "eval": {"split": "valid", "max_new_tokens": 128, "num_beams": 1}}
    results = new_results(config, {"name": "Salesforce/codet5-small", "fingerprint": "sha256:feedbeef", "parameters": 60492288}, TASKS)
    for spec in RUNS:
        upsert_run(results, _run(*spec))
    return results


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    save_results(folder / "results.json", study_results())
    (folder / "plots").mkdir()
    (folder / "plots" / "score_matrix_removed_method.png").write_bytes(b"stale")
    write_report(folder)
    return folder


@pytest.fixture(scope="module")
def report(run_dir):
    return (run_dir / "report.md").read_text()


def _section(text, title):
    start = text.index(title)
    end = text.find("\n### ", start + len(title))
    return text[start:] if end < 0 else text[start:end]


def test_header_names_base_model_tasks_and_config(report):
    assert "`Salesforce/codet5-small` (60,492,288 parameters, frozen)" in report
    assert "`sha256:feedbeef`" in report and "python → javascript" in report
    assert "AdamW lr 0.0005, batch 8, epochs per task 2, gradient clip 1.0" in report
    assert "r=16, alpha=32, dropout=0.1, on q, v" in report and "greedy" in report
    assert "init identity; hybrid_shared's shared block trained with every task" in report
    assert "Incomplete (interrupted) runs" in report and "hybrid_shared (seed 42)" in report


def test_phase_tables_reproduce_the_study(report):
    lora = _section(report, "### lora (seed 42)")
    assert "| 1 | python | 0.0038 → 0.2166 | 0.0038 | 11.48 min | 23.2 | 1.77 GiB | n/a | 0.6641 → 0.2955 |" in lora
    assert "| 2 | javascript | 0.0500 → 0.2489 | 0.0196 |" in lora
    assert "| Final | python (retention) | 0.2150 (forgetting 0.74%) |" in lora
    full = _section(report, "### full_layer (seed 42)")
    assert "| 1 | python | 0.0038 → 0.1927 |" in full and "0.2046 (forgetting -6.18%)" in full
    shared = _section(report, "### hybrid_shared (seed 42)")
    assert "incomplete*: 1 of 2 tasks trained" in shared and "javascript" not in shared.split("\n", 1)[1].split("|---")[1]


def test_detailed_matrix_rows(report):
    matrix = report[report.index("## Detailed performance matrix"):report.index("## Across seeds")]
    avg = f"{(0.2456 + 0.2425) / 2:.4f}"
    forget = f"{100 * (0.2569 - 0.2456) / 0.2569:.2f}%"
    assert f"| hybrid | 42 | 0.2456 | 0.2425 | {avg} | {forget} | {-0.0113:.4f} | {0.06 - 0.0196:.4f} | 3,737,088 / 3,737,088 | 7,474,176 | 16.17 min | 1.77 GiB | n/a | 0.8650 | 0.0200 |" in matrix
    assert "| hybrid_shared* | 42 | 0.2569 | 0.0400 | 0.1484 | n/a | n/a | n/a | 3,737,088 / n/a |" in matrix
    assert "bleu_sentence_smoothed (avg) | pass_at_1 (avg)" in matrix
    assert "| 0.3050 | 0.1200 |" in matrix


def test_score_matrices_cover_every_metric(report):
    lora = report[report.index("## Score matrices"):]
    for metric in ("bleu", "exact_match", "syntax_pass", "bleu_sentence_smoothed", "pass_at_1"):
        assert f"**{metric}**" in lora
    assert "| base | 0.0038 | 0.0196 |" in lora and "| javascript | 0.2150 | 0.2489 |" in lora
    assert "| python | 0.1200 | n/a |" in lora


def _order(text, methods):
    return sorted(methods, key=lambda m: text.index(f"| {m} |"))


def test_rankings(report):
    methods = ["lora", "full_layer", "hybrid", "hybrid_shared*"]
    perf = _section(report, "### By performance")
    assert _order(perf, methods) == ["hybrid", "lora", "full_layer", "hybrid_shared*"]  # interrupted last
    lora_mean = statistics.fmean([(0.2150 + 0.2489) / 2, (0.2100 + 0.2500) / 2])
    assert f"| lora | 2 | {lora_mean:.4f} ± " in perf
    eff = _section(report, "### By parameter efficiency")
    assert _order(eff, methods)[0] == "lora" and f"| {lora_mean / 1.179648:.4f} | 1,179,648 | 1.95% |" in eff
    small = _section(report, "### By stored parameters")
    assert _order(small, methods) == ["lora", "full_layer", "hybrid", "hybrid_shared*"]
    forget = _section(report, "### By forgetting")
    assert _order(forget, methods)[:3] == ["full_layer", "lora", "hybrid"] and "| hybrid_shared* | n/a |" in forget


def test_across_seeds_uses_the_t_interval(report):
    seeds = report[report.index("## Across seeds"):report.index("## Rankings")]
    finals = [(0.2150 + 0.2489) / 2, (0.2100 + 0.2500) / 2]
    half = 12.706 * statistics.stdev(finals) / math.sqrt(2)
    assert f"| lora | 42, 43 | " in seeds and f"{statistics.fmean(finals):.4f} ± {half:.4f}" in seeds
    assert "| hybrid | 42 | 0.2456 | 0.2425 |" in seeds  # one seed: no interval
    assert "**lora** — BLEU, mean ± 95% CI over seeds" in seeds


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plots_are_valid_pngs(run_dir, report):
    names = sorted(p.name for p in (run_dir / "plots").iterdir())
    assert names == sorted([
        "bleu_across_stages.png", "final_scores.png", "score_vs_params.png", "score_matrix_full_layer.png",
        "score_matrix_hybrid.png", "score_matrix_hybrid_shared.png", "score_matrix_lora.png",
        "score_matrix_lora_seed-42.png", "score_matrix_lora_seed-43.png",
    ])  # the stale plot of a method no longer in results.json is gone
    for name in names:
        width, height = _png_size(run_dir / "plots" / name)
        assert width > 100 and height > 100
        assert f"(plots/{name})" in report


def test_summary_table(run_dir):
    lines = summary_table(json.loads((run_dir / "results.json").read_text())).splitlines()
    assert lines[0].split() == ["method", "seed", "stages", "final", "avg", "BLEU", "final", "avg", "loss", "forgetting", "stored", "params",
                                "train", "time"]
    assert lines[2].split() == ["lora", "42", "2/2", f"{(0.2150 + 0.2489) / 2:.4f}", "n/a", "0.74%", "1,179,648", "22.97", "min"]
    assert lines[-1].split()[:4] == ["hybrid_shared", "42", "1/2*", "0.1484"]
    assert len({len(line) for line in lines[2:]}) == 1  # fixed width


def test_report_of_a_results_file_without_runs(tmp_path):
    save_results(tmp_path / "results.json", new_results({}, {"name": "x"}, TASKS))
    text = write_report(tmp_path).read_text()
    assert "none yet" in text and "## Rankings" in text


def test_missing_or_corrupt_results_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="results.json: no results file"):
        write_report(tmp_path)
    (tmp_path / "results.json").write_text("{")
    with pytest.raises(CheckpointError, match="results.json: not valid JSON"):
        write_report(tmp_path)


def test_cli_report(run_dir, tmp_path):
    done = subprocess.run([sys.executable, "-m", "codecl", "report", str(run_dir)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("report.md")
    broken = subprocess.run([sys.executable, "-m", "codecl", "report", str(tmp_path)], capture_output=True, text=True)
    assert broken.returncode == 4
    assert f"{tmp_path / 'results.json'}: no results file" in broken.stderr and "Traceback" not in broken.stderr


def test_t_critical_values():
    assert t_critical_95(1) == 12.706 and t_critical_95(30) == 2.042
    for df, table in ((40, 2.021), (60, 2.000), (120, 1.980)):
        assert t_critical_95(df) == pytest.approx(table, abs=1e-3)
    assert t_critical_95(10**6) == pytest.approx(1.95996, abs=1e-4)
    assert mean_ci95([0.2, None]) == (0.2, None)
    assert mean_ci95([0.1, 0.3])[1] == pytest.approx(12.706 * math.sqrt(0.02) / math.sqrt(2))


def test_render_is_pure_and_deterministic():
    results = study_results()
    assert render_report(results) == render_report(results)


def test_comparisons_between_methods(report):
    section = report[report.index("## Comparisons between methods"):report.index("## The study's claims")]
    # one seed shared by lora and hybrid in the study-shaped results: no interval, no test
    assert f"| lora | hybrid | 1 | {(0.2150 + 0.2489) / 2 - (0.2456 + 0.2425) / 2:+.4f} | n/a | n/a | n/a | needs ≥ 2 seeds |" in section
    assert "hybrid_shared" not in section  # interrupted: not compared


def test_paired_comparison_over_two_seeds():
    results = study_results()
    upsert_run(results, _run("hybrid", 43, [[0.2600, 0.0600], [0.2500, 0.2470]], 3737088, 7474176, 485.0))
    text = render_report(results)
    section = text[text.index("## Comparisons between methods"):text.index("## The study's claims")]
    diffs = [(0.2150 + 0.2489) / 2 - (0.2456 + 0.2425) / 2, 0.2300 - 0.2485]  # lora − hybrid, seeds 42 and 43
    mean, se = statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(2)
    p = 1 - 2 / math.pi * math.atan(abs(mean / se))  # df = 1: Student's t is Cauchy
    row = (f"| lora | hybrid | 2 | {mean:+.4f} | [{mean - 12.706 * se:+.4f}, {mean + 12.706 * se:+.4f}] | {mean / se:.2f} | "
           f"{p:.3g} | no |")
    assert row in section


def test_claims_section(report):
    section = report[report.index("## The study's claims"):report.index("## Rankings")]
    assert "| Claim | Study | Tested here | This run | Verdict |" in section
    assert "`hybrid_best_final_average`" in section and "**inconclusive (needs ≥ 2 seeds)** |" in section
    assert f"full_layer {100 * (0.1927 - 0.2046) / 0.1927:+.2f}% (1 seed)" in section
    assert "no finished run of hybrid_shared | **inconclusive (method not in this run)** |" in section


def test_report_tolerates_methods_it_does_not_know():
    results = study_results()
    upsert_run(results, _run("joint", 42, [[0.30, 0.30]], 60492288, 60492288, 900.0))  # a single "joint" stage, unfinished
    upsert_run(results, _run("replay", 42, [[0.2, 0.1], [0.2, 0.2]], 589824, 589824, 700.0))
    text = render_report(results)
    assert "| replay | 42 |" in text and "| lora | replay | 1 |" in text
    assert "joint*" in text


def _joint_run(seed, bleu, trainable):
    """A finished joint baseline run: stages [base, joint], its per-stage fields keyed `joint`."""
    run = _run("joint", seed, [bleu], trainable, trainable, 900.0)
    run["stages"] = ["base", "joint"]
    for key in ("trainable_parameters", "train_seconds", "train_samples_per_second", "peak_memory_bytes", "loss_curve"):
        run[key] = {"joint": run[key].pop("python")}
    return finalize_run(run)


def test_detailed_matrix_and_params_plot_show_the_joint_stage(tmp_path):
    from codecl.report import _groups, params_points
    from codecl.results import validate_results

    results = study_results()
    for seed in (42, 43):
        upsert_run(results, _joint_run(seed, [0.30, 0.28], 589824))
    validate_results(results)
    text = render_report(results)
    matrix = text[text.index("## Detailed performance matrix"):text.index("## Across seeds")]
    assert "| Trainable params (python / javascript) | Trainable params (joint stage) | Stored params |" in matrix
    assert "| joint | 42 | 0.3000 | 0.2800 | 0.2900 | n/a | n/a | n/a | - | 589,824 | 589,824 | 15.00 min |" in matrix
    assert "| 589,824 / 589,824 | - | 1,179,648 |" in matrix  # lora: per task, no joint stage
    assert "`joint`, on every task's data" in matrix and "n/a / n/a" not in matrix
    points = params_points(_groups(results))
    assert points["joint"] == (589824, 589824, pytest.approx(0.29))
    assert points["lora"][0] == 589824 and points["hybrid"][0] == 3737088
    save_results(tmp_path / "results.json", results)
    write_report(tmp_path)
    assert _png_size(tmp_path / "plots" / "score_vs_params.png")[0] > 0 and (tmp_path / "plots" / "score_matrix_joint.png").is_file()
    assert "Trainable params (joint stage)" not in render_report(study_results())  # no joint run: no such column


@pytest.mark.slow
def test_two_seed_smoke_run_reports_intervals_comparisons_and_claims(tmp_path):
    from helpers import run_codecl

    out = tmp_path / "run"
    run_codecl("run", "--preset", "smoke", "--methods", "full_layer,hybrid_shared", "--seeds", "1,2", "--output-dir", str(out),
               "--set", "method.block.shared_after_first=freeze", "--quiet", cache=tmp_path / "cache")
    text = (out / "report.md").read_text()
    assert "**full_layer** — BLEU, mean ± 95% CI over seeds" in text
    assert "| full_layer | hybrid_shared | 2 |" in text and "`hybrid_shared_forward_transfer`" in text
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["methods"]["hybrid_shared"]["seeds"] == [1, 2] and results["summary"]["comparisons"][0]["n"] == 2
    for run in (r for r in results["runs"] if r["method"] == "hybrid_shared"):  # frozen shared block: LoRA alone after python
        assert run["trainable_parameters"]["javascript"] < run["trainable_parameters"]["python"]


def _with_loss(results, embedded: bool):
    """The study's results with loss matrices (lora lower than hybrid on every seed) and memory above start."""
    results = json.loads(json.dumps(results))
    results["base_model"]["name"] = "embedded" if embedded else "Salesforce/codet5-small"
    finals = {"lora": 2.0, "full_layer": 3.0, "hybrid": 2.5, "hybrid_shared": 2.4}
    for k, run in enumerate(results["runs"]):
        f = finals[run["method"]] + 0.01 * k
        run["scores"]["loss"] = [[4.0, 4.2], [f, 3.9], [f + 0.2, f]][: len(run["stages"])]
        run["peak_memory_above_start_bytes"] = {t: 300 * 2**20 for t in run["stages"][1:]}
        finalize_run(run)
    return results


@pytest.mark.parametrize("embedded", [True, False])
def test_loss_section_reads_lower_as_better_and_leads_for_the_embedded_base(embedded):
    text = render_report(_with_loss(study_results(), embedded))
    loss_at, phases_at = text.index("## Held-out loss"), text.index("## Training phases")
    assert (loss_at < phases_at) == embedded  # the embedded base's BLEU is noise: loss first
    section = text[loss_at:]
    assert "**Lower is better**" in section and "BWT (loss) > 0 means earlier tasks got worse" in section
    # lora python: base 4.0 → own stage 2.0 → final 2.2 (seed 42) / 2.01 → 2.21 (seed 43)
    assert "| lora | 2 | 4.0000 ± 0.0000 → 2.0050 ± 0.0635 → 2.2050 ± 0.0635 |" in section
    comparisons = section[section.index("### Comparisons between methods (final average loss)"):]
    assert "lower is better: a negative difference means A fits the held-out references better" in comparisons
    assert "| 300.0 MiB |" in text  # peak above start in the phase tables and the detailed matrix


def test_examples_from_predictions_files(tmp_path):
    results = _with_loss(study_results(), True)
    save_results(tmp_path / "results.json", results)
    line = lambda i, pred, ref: json.dumps({"id": f"ex{i}", "source": f"Add {i} numbers.", "reference": ref, "prediction": pred,  # noqa: E731
                                            "exact_match": pred == ref, "syntax_ok": True, "bleu_sentence": 0.5, "truncated": i == 1,
                                            "loss": 1.25})
    for folder, pred in [(tmp_path / "predictions" / "base", "pass"), (tmp_path / "lora" / "seed-42" / "predictions" / "javascript", "def f(): return 1")]:
        folder.mkdir(parents=True)
        for task in TASKS:
            (folder / f"{task}.jsonl").write_text("\n".join(line(i, pred, "def f(): return 1" + " " * i) for i in range(5)) + "\n")
    write_report(tmp_path)
    text = (tmp_path / "report.md").read_text()
    examples = text[text.index("## Examples"):]
    assert examples.count("### python: `ex") == 3 and "`ex3`" not in examples  # the three shortest references
    assert "**Description**: Add 0 numbers." in examples and "**Reference**" in examples
    assert "**base** (before training; sentence BLEU 0.500, parses, loss 1.250)" in examples
    assert "**lora** (after javascript, seed 42; sentence BLEU 0.500, parses, exact match, loss 1.250)" in examples
    assert "cut at the token budget" in examples  # ex1 was truncated
    assert (tmp_path / "plots" / "loss_across_stages.png").read_bytes()[:4] == b"\x89PNG"
