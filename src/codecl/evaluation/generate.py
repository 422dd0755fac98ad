"""Batched greedy (or beam) decoding with the KV cache, in length-sorted batches."""
from __future__ import annotations

import torch

from codecl.data.batching import pad_batch


@torch.no_grad()
def generate_codes(model, tokenizer, sources: list[str], max_source_tokens: int, eval_cfg, device: torch.device,
                   progress: bool = True, desc: str = "eval") -> list[str]:
    """Generate code for every description; returns outputs in input order."""
    from tqdm.auto import tqdm

    eos = tokenizer.eos_token_id
    encoded = [ids[: max_source_tokens - 1] + [eos] if len(ids) > max_source_tokens else ids for ids in tokenizer(list(sources))["input_ids"]]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
    outputs: list[str] = [""] * len(encoded)
    model.eval()
    for start in tqdm(range(0, len(order), eval_cfg.batch_size), desc=desc, disable=not progress, leave=False, unit="batch"):
        idx = order[start : start + eval_cfg.batch_size]
        batch = {k: v.to(device) for k, v in pad_batch([encoded[i] for i in idx], None, tokenizer.pad_token_id).items()}
        generated = model.generate(
            **batch, max_new_tokens=eval_cfg.max_new_tokens, num_beams=eval_cfg.num_beams, do_sample=False, use_cache=True,
            **({"no_repeat_ngram_size": eval_cfg.no_repeat_ngram_size} if eval_cfg.no_repeat_ngram_size else {}),
        )
        for i, text in zip(idx, tokenizer.batch_decode(generated, skip_special_tokens=True)):
            outputs[i] = text
    return outputs
