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
