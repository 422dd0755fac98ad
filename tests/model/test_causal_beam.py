"""Beam search (`eval.num_beams` > 1) on decoder-only bases with an inserted decoder layer.

The inserted layer has its own KV-cache slot after the base's layers (`codecl.model.causal_blocks`);
beam search reorders the cache at every step, so that slot must be reordered with the others. For
every family, with a non-identity inserted layer (its zeroed output projections moved) and LoRA
off (`full_layer`) or on (`hybrid`): beam search over left-padded prompts of different lengths gives
the same sequences and scores with and without the cache, and codecl's `generate_with_flags` with
`eval.num_beams=3` returns what a direct `generate(..., num_beams=3)` does. A cache slot that is not
reordered is caught (the comparison bites); a smoke run with `eval.num_beams=2` runs and serves.
"""
import json

import pytest
import torch

from causal_models import FAMILIES, make_causal, save_causal
from codecl.config import BlockConfig, EvalConfig, LoraConfig, MethodConfig
from codecl.evaluation.generate import generate_with_flags
from codecl.methods.build import build_model
from codecl.model import causal_blocks
from codecl.model.base import BaseInfo, count_parameters, fingerprint
from codecl.model.causal import decoder_layers, eos_ids, left_pad, prompt_format

CPU = torch.device("cpu")
METHOD = MethodConfig(lora=LoraConfig(rank=4, alpha=8, dropout=0.0), block=BlockConfig(stack="auto", position=2, init="identity"))
# Not in length order: codecl sorts prompts by length and puts every output back in input order.
DESCRIPTIONS = ["Return the sum of two numbers.", "Sort the list in place.", "Parse a URL into its parts and return them all."]
NEW_TOKENS = 6
BEAMS = EvalConfig(max_new_tokens=NEW_TOKENS, num_beams=3, batch_size=3)


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


def trained_like(family: str, method: str):
    """`method`'s model for task `python` on a tiny `family` base, its modules moved away from their
    identity init (the inserted layer's zeroed output projections and LoRA's zero B included)."""
    model, tokenizer = make_causal(family)
    info = BaseInfo(family, family, fingerprint(model, family), count_parameters(model))
    cm = build_model(model, method, METHOD, info)
    torch.manual_seed(0)
    cm.add_task("python")
    cm.activate("python")
    torch.manual_seed(1)
    with torch.no_grad():
        for _, p in cm.task_parameters("python"):
            p.add_(torch.randn_like(p) * 0.1)
    return cm.eval(), tokenizer


def prompts_batch(tokenizer):
    prompts, _ = prompt_format(tokenizer).prompt_ids(tokenizer, DESCRIPTIONS, 32)
    assert len({len(p) for p in prompts}) == len(prompts)  # different lengths: left padding is needed
    return left_pad(prompts, tokenizer.pad_token_id)


def beam_search(cm, tokenizer, batch, use_cache: bool, **kw):
    return cm.generate(**batch, max_new_tokens=NEW_TOKENS, num_beams=3, do_sample=False, use_cache=use_cache,
                       pad_token_id=tokenizer.pad_token_id, eos_token_id=eos_ids(cm.base, tokenizer), **kw)


@pytest.mark.parametrize("method", ["full_layer", "hybrid"])
def test_beam_search_with_the_cache_equals_without(family, method):
    cm, tokenizer = trained_like(family, method)
    batch = prompts_batch(tokenizer)
    with torch.no_grad():  # the inserted layer (and LoRA) change the logits: the cache slot matters
        moved = cm(**batch).logits
        cm.slot.block = None
        assert not torch.allclose(cm(**batch).logits, moved, atol=1e-3)
        cm.activate("python")
    kw = dict(output_scores=True, return_dict_in_generate=True)
    cached = beam_search(cm, tokenizer, batch, use_cache=True, **kw)
    uncached = beam_search(cm, tokenizer, batch, use_cache=False, **kw)
    assert torch.equal(cached.sequences, uncached.sequences)
    assert torch.allclose(cached.sequences_scores, uncached.sequences_scores, atol=1e-4)
    cache = getattr(cached, "cache", None) or cached.past_key_values  # transformers 5 / 4.x name
    n = len(decoder_layers(cm.base))
    assert len(cache.layers) == n + 1  # the inserted layer's own slot, one row per beam
    assert cache.layers[n].keys.shape[0] == 3 * len(DESCRIPTIONS)
    assert cache.layers[n].keys.shape[-2] == cache.layers[0].keys.shape[-2]


def test_an_inserted_slot_left_out_of_the_beam_reordering_is_caught(monkeypatch):
    """The check above bites: the same comparison fails when the inserted layer's cache slot is not
    reordered with the base's (as a slot kept outside `cache.layers` would not be)."""
    from transformers.cache_utils import DynamicLayer

    class Unordered(DynamicLayer):
        def reorder_cache(self, beam_idx):
            pass

    def ensure_unordered_slot(cache, layer_idx, like):  # as `_ensure_cache_slot`, the inserted layer's slot unordered
        while len(cache.layers) <= layer_idx:
            cache.layers.append(Unordered() if len(cache.layers) == layer_idx else DynamicLayer())

    cm, tokenizer = trained_like("llama", "hybrid")
    batch = prompts_batch(tokenizer)
    kw = dict(output_scores=True, return_dict_in_generate=True)
    uncached = beam_search(cm, tokenizer, batch, use_cache=False, **kw)
    monkeypatch.setattr(causal_blocks, "_ensure_cache_slot", ensure_unordered_slot)
    broken = beam_search(cm, tokenizer, batch, use_cache=True, **kw)
    assert not (torch.equal(broken.sequences, uncached.sequences)
                and torch.allclose(broken.sequences_scores, uncached.sequences_scores, atol=1e-4))


@pytest.mark.parametrize("method", ["full_layer", "hybrid"])
def test_eval_num_beams_decodes_as_a_direct_beam_search(family, method):
    cm, tokenizer = trained_like(family, method)
    beams, generate = [], cm.generate
    cm.generate = lambda **kw: beams.append(kw["num_beams"]) or generate(**kw)
    outputs = generate_with_flags(cm, tokenizer, DESCRIPTIONS, 32, BEAMS, CPU, progress=False)
    assert beams == [3]  # one batch, eval.num_beams passed on
    del cm.generate
    batch = prompts_batch(tokenizer)
    generated = beam_search(cm, tokenizer, batch, use_cache=True)
    stops = eos_ids(cm.base, tokenizer)
    expected = []
    for row in generated[:, batch["input_ids"].shape[1]:].tolist():  # only the new tokens, up to the first stop
        end = next((j for j, t in enumerate(row) if t in stops), None)
        expected.append((tokenizer.decode(row[:end], skip_special_tokens=True), end is None))
    assert outputs == expected
    assert len({text for text, _ in outputs}) > 1  # outputs depend on the prompt: the comparison bites


@pytest.mark.slow
def test_smoke_run_with_beam_search_on_a_llama_folder_runs_and_serves(tmp_path):
    import codecl
    from codecl.results import validate_run_dir
    from helpers import run_codecl

    model = save_causal("llama", tmp_path / "model-llama")
    out = tmp_path / "run"
    run_codecl("run", "--preset", "smoke", "--set", f"model.name={model}", "--set", "eval.num_beams=2", "--methods", "full_layer",
               "--output-dir", str(out), "--quiet", cache=tmp_path / "cache")
    results = validate_run_dir(out, complete=True)
    assert results["config"]["eval"]["num_beams"] == 2
    gen = codecl.load(out, method="full_layer")
    assert gen.cfg.eval.num_beams == 2
    for language in gen.tasks:
        lines = [json.loads(line) for line in
                 (out / "full_layer" / "seed-42" / "predictions" / "javascript" / f"{language}.jsonl").read_text().splitlines()]
        assert lines and all(not line["prediction"].startswith("Description:") for line in lines)
        # serving (num_beams > 1: one generate_with_flags call per budget) answers as the run's evaluation did
        assert gen.generate_batch([line["source"] for line in lines], language) == [line["prediction"] for line in lines]
