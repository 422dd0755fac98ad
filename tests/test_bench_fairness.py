"""The benchmarks' fairness rules (bench/, issue 14): the reference really groups by source + target
length, and model FLOPs are counted per weight matrix by what it trains and what needs a gradient."""
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import hf_reference as hf  # noqa: E402
from train_throughput import linear_flops_per_token  # noqa: E402

from codecl.config import LoraConfig, MethodConfig, TrainConfig  # noqa: E402
from codecl.methods.continual import ContinualModel  # noqa: E402
from helpers import make_base, tiny_config  # noqa: E402


def test_reference_groups_by_source_plus_target_length():
    """transformers 5 drops unused columns before building the sampler: the reference keeps `length`."""
    model, _ = make_base(tiny_config())
    sources = [[5] * n + [1] for n in range(3, 35)]
    targets = [[6] * (40 - n) + [1] for n in range(3, 35)]  # long targets for short sources
    dataset = hf.dataset_from_ids(sources, targets)
    with tempfile.TemporaryDirectory() as out:
        trainer = hf.make_trainer(model, dataset, None, TrainConfig(batch_size=8), 0, torch.device("cpu"), out)
        sampler = trainer.get_train_dataloader().batch_sampler.sampler
    assert type(sampler).__name__ == "LengthGroupedSampler"
    assert list(sampler.lengths) == [len(s) + len(t) for s, t in zip(sources, targets)]


def test_flops_full_layer_block_above_a_frozen_encoder():
    """A block after the top encoder layer: the encoder below it 2N per source token; every matrix of the
    block 6N (its q, k, v read the output of the block's own, trained, layer norm); the decoder's cross-attention k, v 4N per
    source token; per target token the decoder's first self-attention and cross q 2N (their inputs
    depend on nothing trained), everything after the first cross-attention 4N, the LM head 4N."""
    config = tiny_config()
    model, info = make_base(config)
    cm = ContinualModel(model, "full_layer", MethodConfig(lora=LoraConfig()), info)
    cm.add_task("python")
    cm.activate("python")
    d, ff, layers, vocab = config.d_model, config.d_ff, config.num_layers, config.vocab_size
    attn, mlp = d * d, 2 * d * ff  # one of q/k/v/o (heads * d_kv = d_model here); wi + wo
    per_src = layers * 2 * (4 * attn + mlp) + 6 * (4 * attn + mlp) + layers * 4 * (2 * attn)
    first = 2 * (4 * attn) + 2 * attn + 4 * attn + 4 * mlp  # decoder layer 0: self q,k,v,o; cross q; cross o; FF
    per_tgt = first + (layers - 1) * 4 * (4 * attn + 2 * attn + mlp) + 4 * vocab * d
    assert linear_flops_per_token(cm) == (per_src, per_tgt)


def test_flops_lora_trained_matrices_cost_6n():
    """LoRA: each trained matrix 6N except the lowest layer's A matrices (4N); frozen matrices 4N except
    those whose input depends on nothing trained (encoder layer 0's q, k, v: 2N)."""
    config = tiny_config()
    model, info = make_base(config)
    cm = ContinualModel(model, "lora", MethodConfig(lora=LoraConfig(rank=4, target_modules=("q",))), info)
    cm.add_task("python")
    cm.activate("python")
    d, ff, layers, vocab, r = config.d_model, config.d_ff, config.num_layers, config.vocab_size, 4
    attn, mlp, a, b = d * d, 2 * d * ff, d * r, r * d
    # encoder layer 0: q (LoRA) input is the embeddings: frozen q 2N, A 4N, B 6N; k, v 2N; o, FF 4N
    layer0 = 2 * attn + 4 * a + 6 * b + 2 * (2 * attn) + 4 * (attn + mlp)
    per_src = layer0 + (layers - 1) * (4 * (4 * attn + mlp) + 6 * (a + b)) + layers * 4 * (2 * attn)  # + cross k, v
    dec_layer = 4 * (4 * attn) + 6 * (a + b) + 4 * (2 * attn) + 6 * (a + b) + 4 * mlp  # self q,k,v,o + LoRA; cross q,o + LoRA; FF
    # decoder layer 0's self-attention q, k, v: input the target embeddings (nothing trained below): 2N, A 4N
    per_tgt = layers * dec_layer - (2 * 3 * attn + 2 * a) + 4 * vocab * d
    assert linear_flops_per_token(cm) == (per_src, per_tgt)
