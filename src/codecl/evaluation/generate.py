"""Batched greedy (or beam) decoding with the KV cache, in length-sorted batches.

`generate_with_flags` also says, per output, whether decoding stopped at the token budget
(`eval.max_new_tokens`) instead of at end-of-sequence: such an output is cut, and its scores
judge a program the model had not finished (SPEC predictions field `truncated`).

Under several processes (`codecl.distributed`) the batches are dealt to ranks round-robin and the
outputs gathered: every example is decoded in the same batch as in a single process.
"""
from __future__ import annotations

import torch

from codecl.data.batching import pad_batch
from codecl.distributed import Distributed, current


def generate_codes(model, tokenizer, sources: list[str], max_source_tokens: int, eval_cfg, device: torch.device,
                   progress: bool = True, desc: str = "eval", dist: Distributed | None = None) -> list[str]:
    """Generate code for every description; returns outputs in input order."""
    return [text for text, _ in generate_with_flags(model, tokenizer, sources, max_source_tokens, eval_cfg, device, progress, desc, dist)]


def _stopped_at_budget(row: torch.Tensor, eos_id: int) -> bool:
    """True when a generated row holds no end-of-sequence after its first (start) token."""
    return not bool((row[1:] == eos_id).any())


@torch.no_grad()
def generate_with_flags(model, tokenizer, sources: list[str], max_source_tokens: int, eval_cfg, device: torch.device,
                        progress: bool = True, desc: str = "eval", dist: Distributed | None = None) -> list[tuple[str, bool]]:
    """Generate code for every description; returns `(code, truncated)` in input order, where
    `truncated` means decoding stopped at `eval_cfg.max_new_tokens` without end-of-sequence."""
    from tqdm.auto import tqdm

    from codecl.model.causal import generate_with_flags as causal_generate, prompt_format

    dist = dist or current()
    if (fmt := prompt_format(tokenizer)) is not None:  # a decoder-only base: left-padded prompts, new tokens only
        return causal_generate(model, tokenizer, fmt, sources, max_source_tokens, eval_cfg, device, progress, desc, dist)
    eos = tokenizer.eos_token_id
    encoded = [ids[: max_source_tokens - 1] + [eos] if len(ids) > max_source_tokens else ids for ids in tokenizer(list(sources))["input_ids"]]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
    outputs: list[tuple[str, bool]] = [("", False)] * len(encoded)
    model.eval()
    batches = [order[start : start + eval_cfg.batch_size] for start in range(0, len(order), eval_cfg.batch_size)]
    done: list[tuple[int, tuple[str, bool]]] = []
    for idx in tqdm(dist.shard(batches), desc=desc, disable=not progress, leave=False, unit="batch"):
        batch = {k: v.to(device) for k, v in pad_batch([encoded[i] for i in idx], None, tokenizer.pad_token_id).items()}
        with dist.autocast():
            generated = model.generate(
                **batch, max_new_tokens=eval_cfg.max_new_tokens, num_beams=eval_cfg.num_beams, do_sample=False, use_cache=True,
                **({"no_repeat_ngram_size": eval_cfg.no_repeat_ngram_size} if eval_cfg.no_repeat_ngram_size else {}),
            )
        texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
        done += [(i, (text, _stopped_at_budget(row, eos))) for i, text, row in zip(idx, texts, generated)]
    for i, (text, cut) in dist.gather(done):  # one process: `done` itself
        outputs[i] = (text, bool(cut))
    return outputs
