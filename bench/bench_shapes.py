"""Shared by the benchmarks: the model shapes they time and realistic data from the embedded corpus.

Models are T5s with random weights built from config (no download): the quickstart's embedded
shape and Salesforce/codet5-small's exact shape. Data are the embedded corpus's Python pairs
(variable lengths as training sees them) with a BPE tokenizer trained on them.
"""
from __future__ import annotations

import torch

from codecl.model.base import BaseInfo, count_parameters, fingerprint, freeze

SHAPES = {
    "quickstart": dict(d_model=128, d_kv=32, d_ff=512, num_layers=4, num_decoder_layers=4, num_heads=4, vocab_size=4096),
    "codet5-small": dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8, vocab_size=32100),
}


def make_model(shape: str, dtype: torch.dtype = torch.float32, dropout_rate: float = 0.1):
    """A frozen T5 of `shape` with random weights (seed 0), and its BaseInfo."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(**SHAPES[shape], feed_forward_proj="relu", dropout_rate=dropout_rate, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    model = freeze(T5ForConditionalGeneration(config)).to(dtype)
    return model, BaseInfo(shape, shape, fingerprint(model, shape), count_parameters(model))


def tokenizer_and_pairs(samples: int, split: str = "train"):
    """The first `samples` Python pairs of the embedded corpus's `split`, and a 4,096-token BPE trained on them."""
    from codecl.config import load_config
    from codecl.data.tasks import load_pairs
    from codecl.model.embedded import train_tokenizer

    pairs = load_pairs(load_config("quickstart").data, "python", split)[:samples]
    tokenizer = train_tokenizer([p.source for p in pairs] + [p.target for p in pairs], 4096)
    return tokenizer, pairs


def tokenizer_and_sources(samples: int, split: str = "valid"):
    tokenizer, pairs = tokenizer_and_pairs(samples, split)
    return tokenizer, [p.source for p in pairs]
