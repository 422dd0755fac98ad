"""The embedded base: a tokenizer and a small T5 (or decoder-only Llama) built offline from the embedded corpus, cached.

`model.embedded.kind: llama` builds a decoder-only base instead of the T5 below: the same tokenizer
(without T5's appended </s>), 2 × num_layers Llama layers (about the T5's parameters), pretrained as a
causal LM on the same windows (</s> only at real text ends) and the same share of bimodal pairs, written
as the tasks write them (`model.prompt_template`, loss on the code only). Everything downstream treats it
as any decoder-only base (`codecl.model.causal`).

1. A byte-level BPE tokenizer (`tokenizers`) trained on the corpus's train split, with T5's
   specials (`<pad>`=0, `</s>`=1, `<unk>`=2) and 100 sentinels `<extra_id_N>`.
2. A small T5 (`T5Config`, ReLU feed-forward like T5 v1.0 / CodeT5) pretrained by T5 span
   corruption (Raffel et al. 2020, §3.1.4: 15% noise, mean span 3) on the train split's code
   and docstrings, for a bounded number of steps, mixed with T5's prefix-LM objective
   (`prefix_lm_fraction` of the examples: continue a piece of code cut at a random point).
   Span corruption alone trains the decoder on 3-token spans only; the prefix-LM half teaches
   it to write whole lines of code. A `bimodal_fraction` of the examples are description -> code
   pairs, as in CodeT5's bimodal dual generation (arXiv 2109.00859), which CodeT5 learnt from
   CodeSearchNet's train split: here only from train pairs that no task trains on (beyond
   `data.max_train_examples`), so the task examples stay unseen. Without them the base learns
   no use for its input, and a few hundred task steps cannot teach it (its outputs were the same
   for every description).
   End of sequence (</s>) only where a text really ends: a text longer than `PRETRAIN_MAX_TOKENS`
   gives a random window of that many tokens, and a window that stops before the text's end gets
   no </s> anywhere (span-corruption source and target, prefix-LM target; a bimodal code cut to
   the limit ends without one, its description keeps its </s>, as in task data). A </s> taught at
   a cut point teaches the decoder to stop mid-function.
   Budget: `pretrain_steps` (reproducible; minutes are not). The learning rate warms up over
   `pretrain_warmup_steps` and then decays as 1/sqrt(step) (T5's schedule), which does not depend
   on the step budget, and batches are drawn `BUCKET_STEPS` at a time: so a run of N steps is
   exactly the first N steps of any longer run, and `bench/pretrain_curve.py` measures, from one
   run, the bases that every smaller `pretrain_steps` gives. Batches are length-bucketed within
   each draw (less padding), and dropout is `pretrain_dropout` (0: T5 v1.1 turned it off in
   pretraining) while the saved model keeps `dropout_rate` 0.1 for the tasks' training.
3. Saved with `save_pretrained` under `<cache>/models/<key>`, key = hash of the model config,
   the corpus and the codecl version; a second call reuses it. The loss curve is kept as
   `pretrain_loss.json` beside the weights.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from codecl import __version__
from codecl.fileio import verify_manifest, write_json, write_manifest
from codecl.model.dropout import use_fast_dropout
from codecl.paths import cache_dir

NUM_SENTINELS = 100
SPECIALS = ["<pad>", "</s>", "<unk>"]
PRETRAIN_MAX_TOKENS = 128
BUCKET_STEPS = 16
"""Pretraining examples are drawn this many batches at a time and sorted by length into batches."""


def model_key(cfg, texts_digest: str) -> str:
    # `pretraining`: the version of the pretraining recipe below (2: CPU dropout masks from FastDropout;
    # 3: </s> only at real text ends, random windows of long texts, length-bucketed batches,
    # warm-up + 1/sqrt(step) schedule, dropout off in pretraining)
    shape = _asdict(cfg.model.embedded)
    extra = {}
    if shape.pop("kind") != "t5":  # a T5's key is what it was before the decoder-only kind existed: its cache stays valid
        extra = {"kind": cfg.model.embedded.kind, "prompt_template": cfg.model.prompt_template}
    payload = json.dumps({"embedded": shape, "corpus": texts_digest, "v": __version__, "pretraining": 3, **extra}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _asdict(dc) -> dict:
    import dataclasses

    return dataclasses.asdict(dc)


def pretraining_texts(cfg) -> list[str]:
    """Train-split code and docstrings of the run's languages, capped, in a fixed order."""
    from codecl.data.tasks import corpus_texts

    held_out = {i for language in corpus_languages(cfg) for i in _user_task_ids(cfg, language, ("valid", "test"))}
    texts = corpus_texts(cfg.data, corpus_languages(cfg), held_out)  # a task of the embedded corpus: its valid/test pairs left out
    cap = cfg.model.embedded.max_pretrain_examples
    if cap is not None and len(texts) > cap:
        rng = np.random.default_rng(0)
        texts = [texts[i] for i in sorted(rng.choice(len(texts), cap, replace=False))]
    return texts


def bimodal_pairs(cfg) -> list[tuple[str, str]]:
    """(description, code) train pairs of the run's languages that the tasks do not train on: the
    cleaned, filtered train pairs beyond the first `data.max_train_examples` of `load_pairs`'s order."""
    from dataclasses import replace

    from codecl.data.tasks import load_pairs

    cap = cfg.data.max_train_examples
    if cfg.model.embedded.bimodal_fraction == 0:
        return []
    uncapped = replace(cfg.data, max_train_examples=None, tasks={})
    pairs = []
    for language in corpus_languages(cfg):
        if language in cfg.tasks and cap is None:
            continue  # the task trains on every pair of its language
        every = load_pairs(uncapped, language, "train")
        if language in cfg.tasks:
            every = every[cap:]
        used = _user_task_ids(cfg, language)  # never pretrain on a pair that a task of the embedded corpus uses
        pairs += [(p.source, p.target) for p in every if p.id not in used]
    return pairs


def corpus_languages(cfg) -> list[str]:
    """The languages of the run's tasks (a task of the user's own data counts by its language), in task order."""
    from codecl.data.usertasks import task_info

    return list(dict.fromkeys(task_info(cfg.data, t).language for t in cfg.tasks))


def _user_task_ids(cfg, language: str, splits=("train", "valid", "test")) -> set[str]:
    """Ids of the pairs that the run's tasks drawn from the embedded corpus of `language` use in `splits`."""
    from codecl.data.usertasks import user_pairs

    ids: set[str] = set()
    for name in cfg.tasks:
        spec = cfg.data.tasks.get(name)
        if spec is not None and spec.embedded and spec.language == language:
            for split in splits:
                ids |= {p.id for p in user_pairs(cfg.data, name, split)[0]}
    return ids


def ensure_embedded_base(cfg, progress: bool = True) -> Path:
    """Return the cached embedded base folder, building it first if needed."""
    started = time.perf_counter()
    texts = pretraining_texts(cfg)
    bimodal = bimodal_pairs(cfg)
    timing = {"corpus_s": round(time.perf_counter() - started, 2)}
    digest = hashlib.sha256("\0".join(texts + [s + "\1" + t for s, t in bimodal]).encode()).hexdigest()
    folder = cache_dir() / "models" / model_key(cfg, digest)
    if (folder / "manifest.json").is_file():
        verify_manifest(folder)
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        mark = time.perf_counter()
        tokenizer = train_tokenizer(texts, cfg.model.embedded.vocab_size, causal=cfg.model.embedded.kind != "t5")
        timing["tokenizer_s"] = round(time.perf_counter() - mark, 2)
        model = build_model(cfg.model.embedded, tokenizer)
        if cfg.model.embedded.kind != "t5":  # bimodal pairs as the tasks will see them: the run's prompt template
            from codecl.model.causal import configure_tokenizer

            configure_tokenizer(tokenizer, cfg.model.prompt_template)
        mark = time.perf_counter()
        curve = pretrain(model, tokenizer, texts, cfg.model.embedded, seed=cfg.train.seed, progress=progress, bimodal=bimodal)
        timing["pretrain_s"] = round(time.perf_counter() - mark, 2)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_json(staging / "pretrain_loss.json", {"steps": curve, "texts": len(texts), "bimodal_pairs": len(bimodal),
                                                   "corpus_sha256": digest, "timing": timing})
        write_manifest(staging)
        if folder.exists():  # another process finished first
            shutil.rmtree(staging)
        else:
            os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def train_tokenizer(texts: list[str], vocab_size: int, causal: bool = False):
    """Byte-level BPE with T5's specials and sentinels, as a transformers fast tokenizer. T5's appends </s>
    to every text; a decoder-only base's (`causal`) adds nothing (a prompt must not end with </s>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    sentinels = [f"<extra_id_{i}>" for i in range(NUM_SENTINELS)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - NUM_SENTINELS, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(sentinels)
    if not causal:
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        additional_special_tokens=sentinels, model_max_length=4096,
    )


def model_config(shape, vocab_size: int, pad_token_id: int, eos_token_id: int):
    """The transformers config of the embedded base of `shape` (`model.embedded`): a T5, or with
    `kind: llama` a Llama of 2 × num_layers decoder layers (about the T5's parameters)."""
    if shape.kind == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=shape.d_model, intermediate_size=shape.d_ff, num_hidden_layers=2 * shape.num_layers,
            num_attention_heads=shape.num_heads, num_key_value_heads=shape.num_heads, max_position_embeddings=4096,
            tie_word_embeddings=True, pad_token_id=pad_token_id, eos_token_id=eos_token_id, bos_token_id=None,
            rms_norm_eps=1e-6, attention_dropout=0.0,
        )
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab_size, d_model=shape.d_model, d_kv=shape.d_model // shape.num_heads, d_ff=shape.d_ff,
        num_layers=shape.num_layers, num_decoder_layers=shape.num_layers, num_heads=shape.num_heads,
        feed_forward_proj="relu", dropout_rate=0.1, pad_token_id=pad_token_id,
        eos_token_id=eos_token_id, decoder_start_token_id=pad_token_id, tie_word_embeddings=True,
    )


def build_model(shape, tokenizer):
    from transformers import LlamaForCausalLM, T5ForConditionalGeneration

    config = model_config(shape, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    torch.manual_seed(0)
    return (LlamaForCausalLM if shape.kind == "llama" else T5ForConditionalGeneration)(config)


def crop(ids: list[int], rng: np.random.Generator, max_tokens: int = PRETRAIN_MAX_TOKENS) -> tuple[list[int], bool]:
    """At most `max_tokens` of a text's tokens and whether they reach the text's end: the whole
    text when it fits, else a window starting uniformly at random (so the ends of long texts are
    seen too, not only their first `max_tokens`)."""
    if len(ids) <= max_tokens:
        return ids, True
    start = int(rng.integers(0, len(ids) - max_tokens + 1))
    return ids[start : start + max_tokens], start + max_tokens == len(ids)


def span_corrupt(ids: list[int], rng: np.random.Generator, sentinel_ids: list[int], eos_id: int,
                 noise_density: float = 0.15, mean_span: float = 3.0, ended: bool = True) -> tuple[list[int], list[int]]:
    """T5 span corruption: replace random spans by sentinels; the target lists the spans. Source
    and target end with </s> only when `ended` (the tokens reach the text's end)."""
    n = len(ids)
    num_noise = max(1, int(round(n * noise_density)))
    num_spans = max(1, min(int(round(num_noise / mean_span)), len(sentinel_ids), n - num_noise))
    starts = np.sort(rng.choice(np.arange(n - 1), size=num_spans, replace=False)) if n > 1 else np.array([0])
    lengths = np.maximum(1, rng.poisson(mean_span, size=len(starts)))
    source, target, pos = [], [], 0
    for k, (start, length) in enumerate(zip(starts, lengths)):
        start = max(int(start), pos)
        end = min(start + int(length), n)
        if start >= end:
            continue
        source += ids[pos:start] + [sentinel_ids[k]]
        target += [sentinel_ids[k]] + ids[start:end]
        pos = end
    eos = [eos_id] if ended else []
    return source + ids[pos:] + eos, target + eos


def prefix_lm(ids: list[int], rng: np.random.Generator, eos_id: int, ended: bool = True) -> tuple[list[int], list[int]]:
    """Prefix LM: the input is the first 25-75% of the tokens (no </s>: the text goes on), the
    target the rest, ending with </s> only when `ended`."""
    cut = int(rng.integers(max(1, len(ids) // 4), max(2, 3 * len(ids) // 4)))
    return ids[:cut], ids[cut:] + ([eos_id] if ended else [])


def _set_dropout(model, p: float) -> list:
    """Set every dropout probability of a T5 (its `nn.Dropout` layers and `T5Attention.dropout`)
    to `p`; returns the previous values, which `_restore_dropout` puts back."""
    from torch import nn

    saved = []
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            saved.append((module, "p", module.p))
        elif isinstance(getattr(module, "dropout", None), float):
            saved.append((module, "dropout", module.dropout))
    for module, attr, _ in saved:
        setattr(module, attr, p)
    return saved


def _restore_dropout(saved: list) -> None:
    for module, attr, value in saved:
        setattr(module, attr, value)


def pretraining_batches(tokenizer, texts: list[str], shape, rng: np.random.Generator, bimodal: list[tuple[str, str]] = (),
                        bucket_steps: int = BUCKET_STEPS) -> Iterator[list[tuple[list[int], list[int]]]]:
    """Endless pretraining batches of `(source ids, target ids)`: a `bimodal_fraction` of
    description -> code pairs (when `bimodal` has any), the rest prefix LM (`prefix_lm_fraction`)
    or span corruption of a `crop` of a text, </s> only where the text ends. Examples are drawn
    `bucket_steps` batches at a time, sorted by target then source length (a decoder token costs
    several encoder tokens: the 4,096-way output layer) and cut into batches, dealt in a random
    order (on the quickstart corpus about a quarter of the compute is padding, against ~70% in
    random batches). The draws do not depend on the step budget."""
    from codecl.data.batching import truncate_source, truncate_target

    encoded = [ids for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] if len(ids) >= 8]
    sentinel_ids = tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(NUM_SENTINELS)])
    eos = tokenizer.eos_token_id
    bimodal_ids: list = []
    if bimodal:  # as task data: a description keeps its </s> when cut, a cut code gets none
        descriptions, _ = truncate_source(tokenizer([d for d, _ in bimodal])["input_ids"], PRETRAIN_MAX_TOKENS, eos)
        codes, _ = truncate_target(tokenizer([c for _, c in bimodal])["input_ids"], PRETRAIN_MAX_TOKENS)
        bimodal_ids = list(zip(descriptions, codes))
    bimodal_share = shape.bimodal_fraction if bimodal_ids else 0.0

    causal = getattr(shape, "kind", "t5") != "t5"
    if causal and bimodal:  # prompt + code (+ </s> at a real end), the prompt masked, exactly as the tasks encode pairs
        from codecl.data.batching import encode_pairs

        pairs = encode_pairs(tokenizer, [d for d, _ in bimodal], [c for _, c in bimodal], PRETRAIN_MAX_TOKENS, PRETRAIN_MAX_TOKENS)
        bimodal_ids = list(zip(pairs.source_ids, pairs.target_ids))

    def example() -> tuple[list[int], list[int]]:
        if rng.random() < bimodal_share:
            return bimodal_ids[int(rng.integers(len(bimodal_ids)))]
        ids, ended = crop(encoded[int(rng.integers(len(encoded)))], rng)
        if causal:  # a decoder-only base: plain language modelling of the window (labels = inputs; the model shifts)
            ids = ids + ([eos] if ended else [])
            return ids, ids
        if rng.random() < shape.prefix_lm_fraction:
            return prefix_lm(ids, rng, eos, ended)
        return span_corrupt(ids, rng, sentinel_ids, eos, ended=ended)

    def draw():
        size = shape.pretrain_batch_size
        while True:
            pool = [example() for _ in range(bucket_steps * size)]
            pool.sort(key=lambda p: (len(p[1]), len(p[0])))
            for k in rng.permutation(bucket_steps):
                yield pool[k * size : (k + 1) * size]

    return draw()  # the texts are tokenized now, not at the first batch


def lr_factor(step: int, warmup: int) -> float:
    """Multiplier of `pretrain_lr` at 0-based `step`: linear warm-up to 1 over `warmup` steps, then
    sqrt(warmup / (step + 1)) (T5's inverse square root). Independent of the step budget."""
    return min((step + 1) / warmup, math.sqrt(warmup / (step + 1)))


def pretrain(model, tokenizer, texts: list[str], shape, seed: int = 42, progress: bool = True,
             bimodal: list[tuple[str, str]] = (), hook=None) -> list[dict]:
    """Pretraining for `shape.pretrain_steps` steps: `bimodal_fraction` description -> code pairs
    (when `bimodal` has any), the rest prefix LM or span corruption; returns the loss curve.

    `hook(steps_done, seconds)`, if given, is called after every step with the pretraining seconds
    so far; the time it takes is not counted (the clock pauses), and pretraining stops early when
    it returns True. It may use the model (in eval mode); training resumes in train mode."""
    from tqdm.auto import tqdm

    from codecl.data.batching import pad_batch

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=shape.pretrain_lr, weight_decay=0.01)
    warmup = max(1, shape.pretrain_warmup_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup))
    steps = shape.pretrain_steps
    model.train()
    use_fast_dropout(model)  # same dropout, cheaper masks on CPU (codecl.model.dropout)
    saved_dropout = _set_dropout(model, shape.pretrain_dropout)
    draws = pretraining_batches(tokenizer, texts, shape, rng, bimodal)
    curve, window, started = [], [], time.perf_counter()
    objective = "causal LM" if getattr(shape, "kind", "t5") != "t5" else "span corruption + prefix LM"
    bar = tqdm(zip(range(steps), draws), total=steps, desc=f"pretrain ({objective})", disable=not progress, leave=False)
    try:
        for step, pairs in bar:
            batch = pad_batch([p[0] for p in pairs], [p[1] for p in pairs], tokenizer.pad_token_id)
            loss = model(**batch).loss
            if not math.isfinite(loss.item()):
                optimizer.zero_grad(set_to_none=True)
                continue
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            window.append(loss.item())
            if (step + 1) % 10 == 0 or step + 1 == steps:
                curve.append({"step": step + 1, "loss": sum(window) / len(window), "seconds": round(time.perf_counter() - started, 2)})
                bar.set_postfix(loss=f"{curve[-1]['loss']:.3f}")
                window = []
            if hook is not None:
                paused = time.perf_counter()
                stop = hook(step + 1, paused - started)
                started += time.perf_counter() - paused
                model.train()
                if stop:
                    break
    finally:
        _restore_dropout(saved_dropout)
    model.eval()
    return curve
