"""Tokenization, dynamic padding and a seeded length-bucketed batch order.

Padding every batch to 512 tokens costs ~11x a length-bucketed epoch on this project's data;
instead each batch is padded to its own longest member, and batches are formed from examples
of similar length (sorted within shuffled chunks), so padding stays near zero while the
batch order stays random.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = -100  # label positions ignored by the cross-entropy loss
PROMPT_ATTRIBUTE = "codecl_prompt"
"""Where a decoder-only base's tokenizer carries its prompt format (`codecl.model.causal.configure_tokenizer`),
which encodes that tokenizer's pairs itself (`PromptFormat.encode_pairs`): this module needs no model code."""


@dataclass
class EncodedPairs:
    source_ids: list[list[int]]
    """Model inputs: the descriptions (T5), or prompt + code of a decoder-only base (`codecl.model.causal`)."""
    target_ids: list[list[int]]
    """Labels: the codes (T5), or a decoder-only base's prompt + code with the prompt's positions -100."""
    truncated_sources: int
    """How many descriptions were cut to max_source_tokens."""
    truncated_targets: int
    """How many reference codes were cut to max_target_tokens."""

    def __len__(self) -> int:
        return len(self.source_ids)

    def lengths(self) -> list[int]:
        return [len(s) + len(t) for s, t in zip(self.source_ids, self.target_ids)]


def _truncate(rows: list[list[int]], limit: int, eos_id: int | None) -> tuple[list[list[int]], int]:
    """Cut rows (each ending with </s>) longer than `limit` tokens; returns the rows and how many were cut.

    With `eos_id` (sources) a cut row keeps a final </s> (`ids[:limit - 1] + [</s>]`): the encoder
    reads it as the end of its input. With `eos_id=None` (targets) a cut row is just `ids[:limit]`,
    no </s>: its labels stop there, so the decoder is taught </s> only where a function really ends,
    never at a cut point (where it would learn to stop writing mid-function)."""
    out, cut = [], 0
    for ids in rows:
        if len(ids) > limit:
            ids, cut = ids[: limit - 1] + [eos_id] if eos_id is not None else ids[:limit], cut + 1
        out.append(ids)
    return out, cut


def truncate_source(rows: list[list[int]], limit: int, eos_id: int) -> tuple[list[list[int]], int]:
    """Model inputs: a cut row keeps its final </s>."""
    return _truncate(rows, limit, eos_id)


def truncate_target(rows: list[list[int]], limit: int) -> tuple[list[list[int]], int]:
    """Labels: a cut row gets no </s> (only an uncut row ends with its one </s>)."""
    return _truncate(rows, limit, None)


def encode_pairs(tokenizer, sources: list[str], targets: list[str], max_source_tokens: int, max_target_tokens: int) -> EncodedPairs:
    """Tokenize (description -> code) pairs; truncation is counted, never silent. A description cut
    to `max_source_tokens` keeps its </s>; a code cut to `max_target_tokens` ends without one.

    A decoder-only base's tokenizer (it carries a prompt format, `codecl.model.causal`) gets causal-LM
    pairs instead: `source_ids` = prompt + code, `target_ids` = the same with the prompt masked (-100),
    which `pad_batch` turns into an ordinary causal-LM batch."""
    if (fmt := getattr(tokenizer, PROMPT_ATTRIBUTE, None)) is not None:
        return fmt.encode_pairs(tokenizer, sources, targets, max_source_tokens, max_target_tokens)
    eos = tokenizer.eos_token_id
    src, cut_src = truncate_source(tokenizer(list(sources))["input_ids"], max_source_tokens, eos)
    tgt, cut_tgt = truncate_target(tokenizer(list(targets))["input_ids"], max_target_tokens)
    return EncodedPairs(src, tgt, cut_src, cut_tgt)


def pad_batch(sources: list[list[int]], targets: list[list[int]] | None, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest member; labels padded with -100 so padding adds no loss."""
    width = max(len(s) for s in sources)
    input_ids = torch.full((len(sources), width), pad_id, dtype=torch.long)  # (B, S)
    attention_mask = torch.zeros((len(sources), width), dtype=torch.long)
    for row, ids in enumerate(sources):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if targets is not None:
        t_width = max(len(t) for t in targets)
        labels = torch.full((len(targets), t_width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        for row, ids in enumerate(targets):
            labels[row, : len(ids)] = torch.tensor(ids)
        batch["labels"] = labels
    return batch


def bucketed_batches(lengths: list[int], batch_size: int, seed: int, chunk_batches: int = 50) -> list[list[int]]:
    """One epoch's batches: shuffle, sort by length inside chunks of `chunk_batches` batches,
    cut into batches, shuffle the batch order. Deterministic in (lengths, batch_size, seed)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    chunk = batch_size * chunk_batches
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk].tolist(), key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def padding_fraction(batches: list[list[int]], lengths: list[int]) -> float:
    """Share of token positions that are padding under batch-max padding."""
    total = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths) / total if total else 0.0
