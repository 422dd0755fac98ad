"""`codecl run` on decoder-only bases end to end (issue 16): tiny random Qwen2, Llama and GPT-2 folders
given as `model.name` to the smoke preset, every method and baseline, through the CLI (real subprocesses);
then resume after an interruption, and `codecl.load` / `codecl generate` answering from the run.
"""
import json
import shutil

import pytest

from causal_models import save_causal
from codecl.results import validate_run_dir
from helpers import interrupt_run, run_codecl

STUDY = ["lora", "full_layer", "hybrid", "hybrid_shared"]
BASELINES = ["sequential_ft", "joint", "replay", "ewc", "olora"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("codecl-cache")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache):
    """family -> (model folder, run folder), each run made once on first use."""
    root, done = tmp_path_factory.mktemp("causal"), {}

    def run(family: str):
        if family not in done:
            model = save_causal(family, root / f"model-{family}")
            out = root / f"run-{family}"
            run_codecl("run", "--preset", "smoke", "--set", f"model.name={model}", "--methods", ",".join(STUDY + BASELINES),
                       "--output-dir", str(out), "--quiet", cache=cache)
            done[family] = (model, out)
        return done[family]

    return run


def test_qwen_coder_preset_offline_stops_at_once_naming_the_model(tmp_path):
    proc = run_codecl("run", "--preset", "qwen-coder", "--output-dir", str(tmp_path / "run"), cache=tmp_path, check=False, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Qwen/Qwen2.5-Coder-0.5B" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2", "llama", "gpt2"])
def test_every_method_and_baseline_runs_on_a_decoder_only_base(runs, family):
    model, out = runs(family)
    results = validate_run_dir(out, complete=True)
    assert [r["method"] for r in results["runs"]] == STUDY + BASELINES
    assert results["base_model"]["name"] == str(model)
    for method in ("full_layer", "hybrid", "hybrid_shared"):
        block = json.loads((out / method / "seed-42" / "python" / "block.json").read_text())
        assert block["stack"] == "decoder" and block["parameters"] > 0
    adapter = json.loads((out / "lora" / "seed-42" / "python" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "CAUSAL_LM" and adapter["base_model_name_or_path"] == str(model)
    assert (out / "sequential_ft" / "seed-42" / "javascript" / "model.safetensors").is_file()
    lines = [json.loads(line) for line in (out / "hybrid" / "seed-42" / "predictions" / "javascript" / "python.jsonl").read_text().splitlines()]
    assert lines and all(not line["prediction"].startswith("Description:") for line in lines)  # only the new tokens
    loss = {r["method"]: r["scores"]["loss"] for r in results["runs"]}
    assert all(0 < v < 50 for rows in loss.values() for row in rows for v in row)  # teacher-forced, prompt masked


@pytest.mark.slow
def test_resume_after_an_interruption_equals_the_whole_run(runs, cache, tmp_path):
    model, out = runs("qwen2")
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    results = json.loads((partial / "results.json").read_text())
    by_method = {r["method"]: r for r in results["runs"]}
    results["runs"] = [by_method["lora"], interrupt_run(by_method["hybrid_shared"], 2)]  # the others: not started
    (partial / "results.json").write_text(json.dumps(results))
    shutil.rmtree(partial / "hybrid_shared" / "seed-42" / "javascript")
    shutil.rmtree(partial / "hybrid_shared" / "seed-42" / "predictions" / "javascript")
    resumed_cfg = ["run", "--preset", "smoke", "--set", f"model.name={model}", "--methods", ",".join(STUDY + BASELINES)]
    run_codecl(*resumed_cfg, "--output-dir", str(partial), "--resume", "--quiet", cache=cache)
    resumed = validate_run_dir(partial, complete=True)
    original = {r["method"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    for run in resumed["runs"]:
        assert run["scores"] == original[run["method"]]["scores"], run["method"]  # deterministic per stage
    assert {r["method"]: r for r in resumed["runs"]}["lora"]["train_seconds"] == original["lora"]["train_seconds"]  # kept


@pytest.mark.slow
def test_load_and_generate_answer_from_a_decoder_only_run(runs, cache, monkeypatch):
    import codecl

    model, out = runs("gpt2")  # GPT-2: a tokenizer without a pad token
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for method in ("hybrid_shared", "olora", "sequential_ft", "joint"):
        gen = codecl.load(out, method=method)
        assert gen.tasks == ["python", "javascript"]
        stage = "joint" if method == "joint" else "javascript"
        for language in gen.tasks:
            lines = [json.loads(line) for line in
                     (out / method / "seed-42" / "predictions" / stage / f"{language}.jsonl").read_text().splitlines()]
            # the run's own evaluation path: exactly the code the run scored after its last stage
            assert gen.generate_batch([line["source"] for line in lines], language) == [line["prediction"] for line in lines]
    requests = out.parent / "requests.jsonl"
    requests.write_text(json.dumps({"prompt": "Return the sum of two numbers.", "language": "python"}) + "\n")
    proc = run_codecl("generate", str(out), "--method", "hybrid", "--input", str(requests), cache=cache)
    served = codecl.load(out, method="hybrid").generate("Return the sum of two numbers.", "python")
    assert json.loads(proc.stdout.strip().splitlines()[-1])["code"] == served
    # `codecl serve` answers over HTTP with the same code
    from test_serving import Server

    server = Server(out, cache, out.parent / "serve.log", "--method", "hybrid")
    try:
        status, body = server.request("/v1/generate", {"language": "python", "prompt": "Return the sum of two numbers."})
    finally:
        server.stop()
    assert status == 200 and body["code"] == served and body["method"] == "hybrid", body


@pytest.mark.slow
def test_params_of_a_config_only_folder_through_the_cli(tmp_path):
    from transformers import Qwen2Config

    Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                vocab_size=151936, tie_word_embeddings=True, rope_theta=1000000.0, max_position_embeddings=32768,
                rms_norm_eps=1e-6).save_pretrained(tmp_path / "qwen")
    proc = run_codecl("params", "--preset", "qwen-coder", "--set", f"model.name={tmp_path / 'qwen'}", cache=tmp_path)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["base"] == 494_032_768
    assert report["methods"]["lora"]["trainable_per_task"] == 8_798_208
    assert report["methods"]["full_layer"]["trainable_per_task"] == 14_912_384
