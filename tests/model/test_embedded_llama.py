"""`model.embedded.kind: llama`: the embedded base as a decoder-only model, built offline like the T5."""
import numpy as np
import pytest

from codecl.config import load_config


@pytest.fixture(scope="module")
def llama_base(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CODECL_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        from codecl.model.base import load_base

        cfg = load_config("smoke", overrides=["model.embedded.kind=llama", "methods=[lora]"])
        yield cfg, *load_base(cfg.model, cfg, progress=False)


@pytest.mark.slow
def test_llama_kind_is_a_decoder_only_base_with_a_prompt(llama_base):
    cfg, model, tokenizer, info = llama_base
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 2 * cfg.model.embedded.num_layers
    assert not model.config.is_encoder_decoder
    ids = tokenizer("def f(): pass")["input_ids"]
    assert tokenizer.eos_token_id not in ids  # no appended </s>: a prompt must not end the sequence
    from codecl.model.causal import prompt_format

    assert prompt_format(tokenizer).template == cfg.model.prompt_template


def test_llama_kind_has_its_own_cache_key_and_the_t5_key_is_unchanged():
    from codecl.model.embedded import model_key

    t5 = load_config("smoke")
    llama = load_config("smoke", overrides=["model.embedded.kind=llama"])
    other_prompt = load_config("smoke", overrides=["model.embedded.kind=llama", "model.prompt_template='Q: {description} A:'"])
    keys = {model_key(c, "digest") for c in (t5, llama, other_prompt)}
    assert len(keys) == 3
    import hashlib
    import json
    from dataclasses import asdict

    shape = asdict(t5.model.embedded)
    shape.pop("kind")
    from codecl import __version__

    before = json.dumps({"embedded": shape, "corpus": "digest", "v": __version__, "pretraining": 3}, sort_keys=True)
    assert model_key(t5, "digest") == hashlib.sha256(before.encode()).hexdigest()[:16]  # T5 caches made before the kind existed stay valid


@pytest.mark.slow
def test_llama_pretraining_batches_are_language_modelling_and_masked_bimodal_pairs(llama_base):
    cfg, model, tokenizer, info = llama_base
    from dataclasses import replace

    from codecl.data.batching import IGNORE_INDEX
    from codecl.model.embedded import pretraining_batches

    shape = replace(cfg.model.embedded, bimodal_fraction=0.5)
    draws = pretraining_batches(tokenizer, ["def add(a, b):\n    return a + b\n" * 3] * 4, shape, np.random.default_rng(0),
                                bimodal=[("Add two numbers.", "def add(a, b):\n    return a + b")] * 4)
    kinds = {"lm": 0, "bimodal": 0}
    for source, target in [example for _ in range(16) for example in next(draws)]:  # batches are length buckets: look at several
        assert len(source) == len(target)
        if target[0] == IGNORE_INDEX:  # a bimodal pair: the prompt masked, the code and </s> learnt
            kinds["bimodal"] += 1
            first = next(i for i, t in enumerate(target) if t != IGNORE_INDEX)
            assert "Add two numbers." in tokenizer.decode(source[:first]) and target[first:] == source[first:]
            assert target[-1] == tokenizer.eos_token_id
        else:
            kinds["lm"] += 1
            assert target == source
    assert kinds["lm"] and kinds["bimodal"]


@pytest.mark.slow
def test_a_run_on_the_llama_kind(tmp_path):
    from codecl.results import validate_run_dir
    from helpers import run_codecl

    out = tmp_path / "run"
    run_codecl("run", "--preset", "smoke", "--set", "model.embedded.kind=llama", "--methods", "lora,full_layer", "--tasks", "python",
               "--output-dir", str(out), "--quiet", cache=tmp_path / "cache")
    results = validate_run_dir(out, complete=True)
    assert results["runs"][1]["trainable_parameters"]["python"] > 0
