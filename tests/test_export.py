"""`codecl export` (codecl.export): a task's model of a real tiny run as a plain `save_pretrained` folder.

Two runs are made once per module (real `codecl run` subprocesses, the smoke preset, the block
inserted in the middle of the stack): the embedded T5 with the four methods and three baselines,
and a tiny random Qwen2 with lora and full_layer (an inserted decoder layer). Each export is
loaded with `AutoModelFor*.from_pretrained` and must generate, with a plain `model.generate`, what
`codecl.load(...).generate` generates; its logits must equal the run's model's, its parameters
must be the base's plus the inserted layer's, and dropping the inserted layer must change them.
"""
import json
import shutil

import pytest
import torch

from causal_models import save_causal
from codecl.errors import CheckpointError, ConfigError
from helpers import run_codecl

pytestmark = pytest.mark.slow  # several smoke runs exported and regenerated: minutes; CI runs -m slow

T5_METHODS = ["lora", "full_layer", "hybrid", "hybrid_shared", "ewc", "olora", "joint"]
CAUSAL_METHODS = ["lora", "full_layer"]
DESCRIPTIONS = ["Return the sum of two numbers.", "Sort the list in place.", "Parse a URL into its parts."]
SMOKE = ["--preset", "smoke", "--set", "method.block.position=1", "--set", "data.max_valid_examples=2", "--set", "data.max_train_examples=8",
         "--quiet"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("codecl-cache")


@pytest.fixture(scope="module")
def in_cache(cache):
    """In-process loads find the runs' embedded base in the module's cache; one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CODECL_CACHE", str(cache))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield cache
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def t5_run(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("runs") / "t5"
    run_codecl("run", *SMOKE, "--methods", ",".join(T5_METHODS), "--output-dir", str(out), cache=cache)
    return out


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory, cache):
    root = tmp_path_factory.mktemp("causal")
    model = save_causal("qwen2", root / "model-qwen2")
    out = root / "run"
    run_codecl("run", *SMOKE, "--set", f"model.name={model}", "--methods", ",".join(CAUSAL_METHODS), "--output-dir", str(out), cache=cache)
    return out


def _load_export(folder):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    info = json.loads((folder / "codecl_export.json").read_text())
    auto = {"AutoModelForSeq2SeqLM": AutoModelForSeq2SeqLM, "AutoModelForCausalLM": AutoModelForCausalLM}[info["auto_class"]]
    return auto.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder), info


def _text(info, description: str) -> str:
    """The input as the run formats it: the description (T5) or the saved prompt template (causal)."""
    return info["input"].get("prompt_template", "{description}").replace("{description}", description)


def _plain_generate(model, tokenizer, text: str, **tokenizer_kwargs) -> str:
    inputs = tokenizer(text, return_tensors="pt", **tokenizer_kwargs)
    with torch.no_grad():
        ids = model.generate(**inputs)  # the settings of generation_config.json
    if not model.config.is_encoder_decoder:
        ids = ids[:, inputs["input_ids"].shape[1]:]  # only the new tokens: the code
    return tokenizer.decode(ids[0], skip_special_tokens=True)


def _logits(model, tokenizer, text: str, seq2seq: bool) -> torch.Tensor:
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        if seq2seq:
            return model(**inputs, decoder_input_ids=torch.tensor([[0, 5, 6, 7]]), use_cache=False).logits  # (1, 4, V)
        return model(**inputs, use_cache=False).logits  # (1, S, V)


def _check_export(run_dir, method: str, task: str, folder):
    """Export through the Python API and compare with the run's own model and generation."""
    import codecl
    from codecl.export import export_model

    served_task = "python" if task == "joint" else task
    info = export_model(run_dir, method, task, folder)
    assert not info["replaced"]
    model, tokenizer, saved = _load_export(folder)
    assert saved == {k: v for k, v in info.items() if k != "replaced"}
    reference = codecl.load(run_dir, method=method)
    expected = [reference.generate(d, served_task) for d in DESCRIPTIONS]
    got = [_plain_generate(model, tokenizer, _text(info, d)) for d in DESCRIPTIONS]
    assert got == expected and any(got), (method, task)
    # the same function, not only the same greedy tokens: logits of the run's model with the task's modules
    reference.model.activate(reference.module_for(served_task))
    text = _text(info, DESCRIPTIONS[0])
    seq2seq = model.config.is_encoder_decoder
    exported = _logits(model, tokenizer, text, seq2seq)
    torch.testing.assert_close(exported, _logits(reference.model, reference.tokenizer, text, seq2seq), atol=1e-4, rtol=0)
    # LoRA merged (no extra parameters); the inserted block is an ordinary layer and counts once
    results = json.loads((run_dir / "results.json").read_text())
    stage = "joint" if method == "joint" else task
    block_json = run_dir / method / "seed-42" / stage / "block.json"
    block = json.loads(block_json.read_text())["parameters"] if block_json.is_file() else 0
    assert sum(p.numel() for p in model.parameters()) == results["base_model"]["parameters"] + block == info["parameters"]
    assert not any("lora_" in name for name, _ in model.named_parameters())
    _check_model_card(folder, results, method, task, stage)
    return model, tokenizer, info, exported


def _check_model_card(folder, results, method, task, stage):
    """README.md: a model card whose front matter parses and whose scores are results.json's."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "other" and card.data.library_name == "transformers" and method in card.data.tags
    run = next(r for r in results["runs"] if r["method"] == method)
    tasks = results["tasks"]
    assert f"Task stream, in training order: {' → '.join(run.get('order') or tasks)}." in card.text
    final = run["scores"]["bleu"][-1]
    row = next(line for line in card.text.splitlines() if line.startswith(f"| {tasks[1]} | "))
    assert row.split(" | ")[1] == f"{final[1]:.4f}"
    if task in tasks:  # the joint baseline's `python` model: no stage of its own (its one stage is `joint`)
        own = f"{run['scores']['syntax_pass'][run['stages'].index(task)][tasks.index(task)]:.4f}" if task in run["stages"] else "n/a"
        line = next(line for line in card.text.splitlines() if line.startswith("| syntax_pass | "))
        assert line == f"| syntax_pass | {own} | {run['scores']['syntax_pass'][-1][tasks.index(task)]:.4f} |"
    assert f"learning rate {results['config']['train']['lr']}" in card.text and "## Licence" in card.text


def test_base_licence_reads_the_card_then_the_table(tmp_path):
    from codecl.export import base_licence

    (tmp_path / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a base\n")
    assert base_licence({"name": "my/base", "path": str(tmp_path)})[0] == "apache-2.0"
    assert base_licence({"name": "Salesforce/codet5-small", "path": str(tmp_path / "none")})[0] == "bsd-3-clause"
    assert base_licence({"name": "Qwen/Qwen2.5-Coder-0.5B", "path": ""})[0] == "apache-2.0"
    assert base_licence({"name": "someone/unknown", "path": ""}) == ("other", "unknown here: check the base model's own card")
    assert base_licence({"name": "embedded", "path": ""})[0] == "other"


@pytest.mark.parametrize("method,task", [(m, "javascript") for m in T5_METHODS if m != "joint"] + [("joint", "joint"), ("joint", "python")])
def test_t5_export_generates_what_codecl_generates(t5_run, in_cache, tmp_path, method, task):
    model, tokenizer, info, exported = _check_export(t5_run, method, task, tmp_path / "export")
    generation = json.loads((tmp_path / "export" / "generation_config.json").read_text())
    assert generation["max_new_tokens"] == 24 and generation["num_beams"] == 1 and generation["do_sample"] is False
    assert info["lora_merged"] == {"lora": [task], "hybrid": [task], "hybrid_shared": [task], "olora": ["python", "javascript"],
                                   "ewc": ["shared"], "joint": ["shared"]}.get(method, [])
    layer = info["inserted_layer"]
    if method not in ("full_layer", "hybrid", "hybrid_shared"):
        assert layer is None and model.config.num_layers == 2
        return
    # after the first of the embedded base's 2 encoder layers: layer 1 of 3, no relative-attention bias
    assert layer["stack"] == "encoder" and layer["index"] == 1 and model.config.num_layers == 3 == len(model.encoder.block)
    assert model.config.num_decoder_layers == 2
    assert not model.encoder.block[1].layer[0].SelfAttention.has_relative_attention_bias
    del model.encoder.block[layer["index"]]  # without the block the model computes something else
    assert (_logits(model, tokenizer, _text(info, DESCRIPTIONS[0]), model.config.is_encoder_decoder) - exported).abs().max() > 1e-2


def test_t5_description_longer_than_the_run_limit_is_cut_with_truncation(t5_run, in_cache, tmp_path):
    import codecl
    from codecl.export import export_model

    info = export_model(t5_run, "hybrid", "python", tmp_path / "export")
    model, tokenizer, _ = _load_export(tmp_path / "export")
    long = " ".join(DESCRIPTIONS * 6)
    limit = info["input"]["max_source_tokens"]
    assert len(tokenizer(long)["input_ids"]) > limit
    assert _plain_generate(model, tokenizer, long, truncation=True, max_length=limit) == codecl.load(t5_run, method="hybrid").generate(long, "python")


@pytest.mark.parametrize("method", CAUSAL_METHODS)
def test_causal_export_generates_what_codecl_generates(causal_run, in_cache, tmp_path, method):
    model, tokenizer, info, exported = _check_export(causal_run, method, "javascript", tmp_path / "export")
    assert info["auto_class"] == "AutoModelForCausalLM" and info["input"]["prompt_template"] == "Description: {description}\nCode:\n"
    generation = json.loads((tmp_path / "export" / "generation_config.json").read_text())
    assert generation["pad_token_id"] == tokenizer.pad_token_id and tokenizer.padding_side == "left"
    layer = info["inserted_layer"]
    if method == "lora":
        assert layer is None and model.config.num_hidden_layers == 3
        return
    assert layer["stack"] == "decoder" and layer["index"] == 1
    assert model.config.num_hidden_layers == 4 == len(model.model.layers) == len(model.config.layer_types)
    assert [lay.self_attn.layer_idx for lay in model.model.layers] == [0, 1, 2, 3]
    del model.model.layers[layer["index"]]
    model.config.num_hidden_layers = 3
    assert (_logits(model, tokenizer, _text(info, DESCRIPTIONS[0]), model.config.is_encoder_decoder) - exported).abs().max() > 1e-2


def test_cli_export_replaces_only_an_earlier_export(t5_run, cache, in_cache, tmp_path):
    from codecl.export import export_model

    out = tmp_path / "export"
    export_model(t5_run, "lora", "python", out)
    proc = run_codecl("export", str(t5_run), "--method", "hybrid", "--task", "python", "--output", str(out), "--seed", "42", cache=cache)
    assert "exported hybrid seed 42 task python" in proc.stdout and "replaced the earlier export" in proc.stderr
    assert json.loads((out / "codecl_export.json").read_text())["method"] == "hybrid" and (out / "model.safetensors").is_file()
    assert not list(tmp_path.glob(".*tmp"))  # the staging folder and the earlier export are gone
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"other: not empty and not an earlier codecl export"):
        export_model(t5_run, "lora", "python", other)
    assert [p.name for p in other.iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    assert not export_model(t5_run, "lora", "python", tmp_path / "empty")["replaced"]


def test_cli_export_errors_name_the_path_and_the_fix(t5_run, cache, tmp_path):
    proc = run_codecl("export", str(t5_run), "--method", "lora", "--task", "go", "--output", str(tmp_path / "x"), cache=cache, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and str(t5_run) in lines[0] and "python, javascript" in lines[0], proc.stderr
    broken = tmp_path / "run"
    shutil.copytree(t5_run, broken, ignore=shutil.ignore_patterns("predictions", "plots"))
    shutil.rmtree(broken / "lora" / "seed-42" / "python")
    proc = run_codecl("export", str(broken), "--method", "lora", "--task", "javascript", "--output", str(tmp_path / "x"), cache=cache, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 4 and len(lines) == 1 and str(broken / "lora" / "seed-42" / "python") in lines[0], proc.stderr
    assert not (tmp_path / "x").exists()


def test_api_errors(t5_run, in_cache, tmp_path):
    from codecl.export import export_model

    with pytest.raises(ConfigError, match=r"method 'nope'.*available: .*lora"):
        export_model(t5_run, "nope", "python", tmp_path / "x")
    with pytest.raises(ConfigError, match=r"seed 7 .*available: 42"):
        export_model(t5_run, "lora", "python", tmp_path / "x", seed=7)
    with pytest.raises(ConfigError, match=r"task 'joint'.*exportable: python, javascript"):
        export_model(t5_run, "lora", "joint", tmp_path / "x")
    with pytest.raises(CheckpointError, match="no results file"):
        export_model(tmp_path, "lora", "python", tmp_path / "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        export_model(t5_run, "lora", "python", tmp_path / "file")
