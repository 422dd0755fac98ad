"""The embedded base: tokenizer, span corruption, prefix LM, pretraining loss falls."""
import dataclasses

import numpy as np

from codecl.config import EmbeddedModelConfig
from codecl.model.embedded import NUM_SENTINELS, build_model, prefix_lm, pretrain, span_corrupt, train_tokenizer

CODE = [
    f"def add_{i}(a, b):\n    \"\"\"Add two numbers.\"\"\"\n    total = a + b * {i}\n    return total\n" for i in range(60)
] + [f"function mul{i}(x, y) {{\n  // multiply\n  return x * y + {i};\n}}\n" for i in range(60)]


def test_tokenizer_has_t5_specials_and_roundtrips_code():
    tok = train_tokenizer(CODE, 600)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.convert_tokens_to_ids("<extra_id_0>") != tok.unk_token_id
    assert len({tok.convert_tokens_to_ids(f"<extra_id_{i}>") for i in range(NUM_SENTINELS)}) == NUM_SENTINELS
    ids = tok(CODE[3])["input_ids"]
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == CODE[3]  # indentation and newlines survive


def test_span_corruption_and_prefix_lm_reconstruct_the_input():
    rng = np.random.default_rng(0)
    ids = list(range(100, 160))
    sentinels = list(range(10, 20))
    source, target = span_corrupt(ids, rng, sentinels, eos_id=1)
    rebuilt, spans, current = [], {}, None
    for t in target[:-1]:
        if t in sentinels:
            current = t
            spans[t] = []
        else:
            spans[current].append(t)
    for t in source[:-1]:
        rebuilt += spans[t] if t in sentinels else [t]
    assert rebuilt == ids and source[-1] == target[-1] == 1
    prefix, rest = prefix_lm(ids, rng, eos_id=1)
    assert prefix[:-1] + rest[:-1] == ids and 15 <= len(prefix) - 1 <= 45


def test_pretraining_loss_falls():
    tok = train_tokenizer(CODE, 600)
    shape = dataclasses.replace(EmbeddedModelConfig(), d_model=32, num_layers=2, num_heads=2, d_ff=64, vocab_size=600,
                                pretrain_steps=40, pretrain_batch_size=16, pretrain_lr=0.005)
    model = build_model(shape, tok)
    curve = pretrain(model, tok, CODE, shape, progress=False)
    assert len(curve) == 4 and curve[-1]["loss"] < curve[0]["loss"] - 0.5


def test_bimodal_pairs_are_train_pairs_no_task_trains_on(tmp_path):
    from codecl.config import DataConfig, RunConfig
    from codecl.data import tasks
    from codecl.data.tasks import load_pairs
    from codecl.model.embedded import bimodal_pairs
    from helpers import write_jsonl

    def record(i):
        return {"url": f"u{i}", "language": "python", "docstring": f"Compute value number {i} here.",
                "code": f"def f{i}(x):\n    y = x + {i}\n    return y * {i}\n"}

    write_jsonl(tmp_path / "python" / "train.jsonl", [record(i) for i in range(30)])
    write_jsonl(tmp_path / "python" / "valid.jsonl", [record(i) for i in range(50, 55)])
    write_jsonl(tmp_path / "python" / "test.jsonl", [record(i) for i in range(60, 65)])
    tasks.clear_cache()
    cfg = RunConfig(tasks=("python",), data=DataConfig(source="local", path=str(tmp_path), max_train_examples=12))
    pool = bimodal_pairs(cfg)
    seen = {(p.source, p.target) for split in ("train", "valid", "test") for p in load_pairs(cfg.data, "python", split)}
    assert len(pool) == 18 and seen.isdisjoint(pool)
    assert all(code.startswith("def f") for _, code in pool)
    assert bimodal_pairs(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, max_train_examples=None))) == []
    tasks.clear_cache()


def test_bimodal_pretraining_learns_description_to_code():
    """With only bimodal examples, the base learns to map each description to its code: the loss on
    those pairs falls far below the loss on the same codes given the wrong descriptions."""
    import torch

    pairs = [(f"Return the {w} of the list.", f"def {w}(xs):\n    return {w}(xs)\n") for w in ("sum", "max", "min", "len", "sorted", "any")]
    tok = train_tokenizer([t for pair in pairs for t in pair] * 5 + CODE, 600)
    shape = dataclasses.replace(EmbeddedModelConfig(), d_model=32, num_layers=2, num_heads=2, d_ff=64, vocab_size=600,
                                pretrain_steps=120, pretrain_batch_size=12, pretrain_lr=0.01, bimodal_fraction=1.0)
    model = build_model(shape, tok)
    pretrain(model, tok, CODE, shape, progress=False, bimodal=pairs)

    def loss(descriptions, codes):
        enc = tok(descriptions, padding=True, return_tensors="pt")
        labels = tok(codes, padding=True, return_tensors="pt")["input_ids"]
        labels[labels == tok.pad_token_id] = -100
        with torch.no_grad():
            return model(**enc, labels=labels).loss.item()

    descriptions, codes = [d for d, _ in pairs], [c for _, c in pairs]
    assert loss(descriptions, codes) < 0.5 * loss(descriptions[1:] + descriptions[:1], codes)
