"""The embedded base: tokenizer, span corruption, prefix LM, </s> only at real ends, pretraining loss falls."""
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
    assert prefix + rest[:-1] == ids and rest[-1] == 1 and 15 <= len(prefix) <= 45  # the prefix goes on: no </s>


def test_a_piece_that_stops_before_the_text_ends_gets_no_eos():
    rng = np.random.default_rng(0)
    ids, sentinels = list(range(100, 160)), list(range(10, 20))
    source, target = span_corrupt(ids, rng, sentinels, eos_id=1, ended=False)
    assert 1 not in source and 1 not in target
    prefix, rest = prefix_lm(ids, rng, eos_id=1, ended=False)
    assert prefix + rest == ids


def _rebuild(source, target, sentinels, eos):
    """The window of text tokens an example shows (span corruption undone), and its </s> count."""
    body = [t for t in source + target if t != eos]
    if not any(t in sentinels for t in source):  # prefix LM
        return body, (source + target).count(eos)
    spans, current = {}, None
    for t in target:
        if t in sentinels:
            current = spans.setdefault(t, [])
        elif t != eos:
            current.append(t)
    window = [u for t in source if t != eos for u in (spans[t] if t in sentinels else [t])]
    return window, source.count(eos) + target.count(eos)


def test_pretraining_examples_end_with_eos_only_where_the_text_ends():
    """Long texts (well over PRETRAIN_MAX_TOKENS) give windows; an example has </s> (once at the end
    of its target, and of a span-corruption source) exactly when its window is the text's end. A
    bimodal code cut to the limit has no </s>; an uncut one ends with exactly one."""
    from codecl.model.embedded import PRETRAIN_MAX_TOKENS, crop, pretraining_batches

    tok = train_tokenizer(CODE, 600)
    eos, sentinels = tok.eos_token_id, set(tok.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(NUM_SENTINELS)]))
    long_texts = ["".join(CODE[k : k + 25]) for k in (0, 40, 80)]
    encoded = tok(long_texts, add_special_tokens=False)["input_ids"]
    assert all(len(ids) > 2 * PRETRAIN_MAX_TOKENS for ids in encoded)
    rng = np.random.default_rng(1)
    assert crop(encoded[0], rng, 1000) == (encoded[0], True)
    shape = dataclasses.replace(EmbeddedModelConfig(), pretrain_batch_size=8, bimodal_fraction=0.0)
    stream = pretraining_batches(tok, long_texts, shape, rng)
    seen = {True: 0, False: 0}
    for _ in range(40):
        for source, target in next(stream):
            window, eos_count = _rebuild(source, target, sentinels, eos)
            text = next(ids for ids in encoded if any(ids[i : i + len(window)] == window for i in range(len(ids))))
            at_end = text[-len(window):] == window
            assert eos_count == (2 if any(t in sentinels for t in source) else 1) * at_end, (source, target)
            assert (target[-1] == eos) == at_end and (eos not in target[:-1])
            seen[at_end] += 1
    assert seen[True] > 0 and seen[False] > 10 * seen[True]  # both kinds drawn; most windows are cut

    pairs = [("Add many numbers.", long_texts[0]), ("Add two numbers.", CODE[0])]
    shape = dataclasses.replace(shape, bimodal_fraction=1.0)
    for source, target in next(pretraining_batches(tok, CODE, shape, rng, bimodal=pairs)):
        assert source[-1] == eos
        if len(target) == PRETRAIN_MAX_TOKENS:
            assert eos not in target and target == encoded[0][:PRETRAIN_MAX_TOKENS]
        else:
            assert target == tok(CODE[0])["input_ids"] and target.count(eos) == 1 and target[-1] == eos


def test_pretraining_loss_falls():
    tok = train_tokenizer(CODE, 600)
    shape = dataclasses.replace(EmbeddedModelConfig(), d_model=32, num_layers=2, num_heads=2, d_ff=64, vocab_size=600,
                                pretrain_steps=40, pretrain_batch_size=16, pretrain_lr=0.005)
    model = build_model(shape, tok)
    curve = pretrain(model, tok, CODE, shape, progress=False)
    assert len(curve) == 4 and curve[-1]["loss"] < curve[0]["loss"] - 0.5


def test_a_short_run_is_the_start_of_a_longer_one():
    """The schedule and the draws do not depend on `pretrain_steps`: 12 steps give the same weights
    as a 40-step run stopped after 12 by its hook (which bench/pretrain_curve.py relies on), the
    hook's time is not counted, and the saved model keeps its dropout for the tasks' training."""
    import time

    import torch

    from codecl.model.embedded import lr_factor

    assert lr_factor(9, 10) == 1.0 and lr_factor(39, 10) == 0.5 and lr_factor(0, 10) == 0.1
    tok = train_tokenizer(CODE, 600)
    shape = dataclasses.replace(EmbeddedModelConfig(), d_model=32, num_layers=2, num_heads=2, d_ff=64, vocab_size=600,
                                pretrain_steps=12, pretrain_batch_size=4, pretrain_warmup_steps=5)
    short = build_model(shape, tok)
    pretrain(short, tok, CODE, shape, progress=False)
    calls = []

    def hook(step, seconds):
        calls.append((step, seconds))
        if step == 11:
            time.sleep(0.5)  # measuring: not pretraining time
        return step == 12

    stopped = build_model(shape, tok)
    curve = pretrain(stopped, tok, CODE, dataclasses.replace(shape, pretrain_steps=40), progress=False, hook=hook)
    assert [s for s, _ in calls] == list(range(1, 13)) and curve[-1]["step"] == 10
    assert calls[-1][1] - calls[-2][1] < 0.4
    a, b = short.state_dict(), stopped.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert short.encoder.block[0].layer[0].dropout.p == 0.1 and short.encoder.block[0].layer[0].SelfAttention.dropout == 0.1


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
