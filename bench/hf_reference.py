"""The plain Hugging Face pipeline a user would write for codecl's study, at its best settings.

Shared by bench/train_throughput.py (its training reference) and bench/study.py (the whole study):
- training: `Seq2SeqTrainer` + PEFT, `DataCollatorForSeq2Seq` dynamic padding, batches grouped by
  source + target length (`train_sampling_strategy="group_by_length"` on a `length` column), no
  evaluation, logging or saving inside the Trainer, AdamW (the Trainer's default, fused) at a
  constant learning rate (codecl's schedule; the Trainer's default would decay it linearly);
- the length column: transformers 5.x drops dataset columns the model's `forward` does not take
  *before* it builds the sampler (`Trainer._get_dataloader`), so with the default
  `remove_unused_columns=True` a `length` column is silently ignored and `LengthGroupedSampler`
  groups by `input_ids` (the source) alone, leaving decoder labels padded. The fix a user finds:
  `remove_unused_columns=False` and a collator that drops `length` itself (`LengthDroppingCollator`);
- LoRA: PEFT adapters, one per task on one `PeftModel` (`add_adapter` / `set_adapter`);
- an inserted block (full_layer, hybrid, hybrid_shared): LLaMA Pro's identity-initialised copy of
  the encoder layer it follows (output projections `o` and `wo` zeroed), run by a forward hook on
  that layer (`InsertedBlocks`). The blocks are registered on the model handed to the Trainer (the
  `PeftModel` wrapper when there is one, so PEFT's `add_adapter` never puts LoRA inside them), hence
  trained by its optimizer. Encoder blocks only (the study's setting); a decoder block would need
  its own KV-cache slot;
- generation: `model.generate` one batch of `eval.batch_size` descriptions at a time, in input order,
  greedy with the run's `max_new_tokens` and `no_repeat_ngram_size`;
- BLEU: sacrebleu corpus BLEU-4 (`tokenize="none"`, `smooth_method="none"`) on code split by
  `codecl.evaluation.metrics.code_tokenize` (whitespace inside a token kept as U+2581, as codecl does).
"""
from __future__ import annotations

import copy
import re
import tempfile
import time

import torch
from torch import nn


# ---------------------------------------------------------------- data

def dataset_from_ids(source_ids: list[list[int]], target_ids: list[list[int]]):
    """A `datasets.Dataset` of token ids with a `length` column = source + target tokens."""
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": source_ids, "attention_mask": [[1] * len(s) for s in source_ids], "labels": target_ids,
                              "length": [len(s) + len(t) for s, t in zip(source_ids, target_ids)]})


def tokenize_pairs(tokenizer, sources: list[str], targets: list[str], max_source_tokens: int, max_target_tokens: int):
    """What a user writes: the tokenizer with truncation, then the dataset with its `length` column."""
    enc = tokenizer(list(sources), max_length=max_source_tokens, truncation=True)
    labels = tokenizer(text_target=list(targets), max_length=max_target_tokens, truncation=True)
    return dataset_from_ids(enc["input_ids"], labels["input_ids"])


class LengthDroppingCollator:
    """`DataCollatorForSeq2Seq` after dropping the `length` column; `record`, when given, receives
    each batch's (source lengths, target lengths, padded source width, padded target width)."""

    def __init__(self, tokenizer, model, record=None, pad_to: int | None = None):
        from transformers import DataCollatorForSeq2Seq

        self.pad_to, self.record = pad_to, record
        self.inner = DataCollatorForSeq2Seq(tokenizer=tokenizer, model=model, label_pad_token_id=-100,
                                            padding="max_length" if pad_to else True, max_length=pad_to)

    def __call__(self, features):
        features = [{k: v for k, v in f.items() if k != "length"} for f in features]
        batch = self.inner(features)
        if self.record is not None:
            self.record(([len(f["input_ids"]) for f in features], [len(f["labels"]) for f in features],
                         batch["input_ids"].shape[1], batch["labels"].shape[1]))
        return batch


# ---------------------------------------------------------------- modules

T5_LORA_TARGETS = ("q", "k", "v", "o", "wi", "wo")

def peft_lora_config(lora_cfg):
    """PEFT's LoraConfig with codecl's `method.lora` settings."""
    from peft import LoraConfig, TaskType

    if not isinstance(lora_cfg.rank, int):
        raise ValueError(f"method.lora.rank={lora_cfg.rank!r}: the reference takes an integer rank")
    targets = list(lora_cfg.target_modules) or list(T5_LORA_TARGETS)  # empty: codecl's default for a T5 base
    return LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=lora_cfg.rank, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                      target_modules=targets)


class InsertedBlocks(nn.ModuleDict):
    """Inserted encoder blocks keyed by task (or `shared`); a forward hook on encoder layer
    `position` (1-based, -1 = the top) runs the `active` one on that layer's output. Create it on
    the bare model (before PEFT), so the template copy has no LoRA in it."""

    def __init__(self, model: nn.Module, position: int = -1):
        super().__init__()
        layers = model.encoder.block
        index = len(layers) - 1 if position == -1 else position - 1
        neighbour = layers[index]
        if neighbour.layer[0].SelfAttention.has_relative_attention_bias:
            raise ValueError("the block must follow a layer above the first (layer 1 holds T5's relative position bias)")
        self.__dict__["_template"] = copy.deepcopy(neighbour)  # not a submodule: neither trained nor saved
        self.__dict__["active"] = None
        neighbour.register_forward_hook(self._hook, with_kwargs=True)

    def new(self, key: str) -> nn.Module:
        """LLaMA Pro's identity init: a float32 copy of the layer below, output projections zeroed."""
        block = copy.deepcopy(self._template).float()
        with torch.no_grad():
            block.layer[0].SelfAttention.o.weight.zero_()
            block.layer[-1].DenseReluDense.wo.weight.zero_()
        block.requires_grad_(True)
        self[key] = block.to(next(self._template.parameters()).device)
        return self[key]

    def activate(self, key: str | None) -> None:
        """Run block `key` (None: none); only the active block is trainable."""
        for name, block in self.items():
            block.requires_grad_(name == key)
        self.__dict__["active"] = self[key] if key is not None else None

    def _hook(self, module, args, kwargs, output):
        block = self.active
        if block is None:
            return None
        # T5Stack calls each layer as (hidden, attention_mask, position_bias, ...); it returns (hidden, position_bias, ...).
        dtype = next(block.parameters()).dtype  # float32 block in a bfloat16 base: cast in and out
        cast = lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t  # noqa: E731
        mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
        hidden = block(cast(output[0]), cast(mask), cast(output[1]))[0]
        return (hidden.to(output[0].dtype),) + tuple(output[1:])


# ---------------------------------------------------------------- training

def grouping_args(on: bool) -> dict:
    """transformers 5 names it `train_sampling_strategy="group_by_length"`; 4.x `group_by_length=True`."""
    from transformers import Seq2SeqTrainingArguments

    if "train_sampling_strategy" in Seq2SeqTrainingArguments.__dataclass_fields__:
        return {"train_sampling_strategy": "group_by_length" if on else "random"}
    return {"group_by_length": on}


def make_trainer(model, dataset, tokenizer, train_cfg, seed: int, device: torch.device, out: str, record=None,
                 pad_to: int | None = None, callbacks=()):
    """A `Seq2SeqTrainer` at its best settings for this job (see the module docstring)."""
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

    args = Seq2SeqTrainingArguments(
        output_dir=out, per_device_train_batch_size=train_cfg.batch_size, num_train_epochs=train_cfg.epochs,
        learning_rate=train_cfg.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=train_cfg.weight_decay,
        max_grad_norm=train_cfg.grad_clip if train_cfg.grad_clip > 0 else 0.0, seed=seed,
        **grouping_args(pad_to is None), length_column_name="length", remove_unused_columns=False,
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True,
        use_cpu=device.type == "cpu", dataloader_num_workers=0,
    )
    from transformers.trainer_callback import PrinterCallback

    collator = LengthDroppingCollator(tokenizer, model, record, pad_to)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)  # with tqdm off it prints the final metrics dict
    return trainer


def train(model, dataset, tokenizer, train_cfg, seed: int, device: torch.device, record=None, pad_to: int | None = None,
          callbacks=(), timings: dict | None = None) -> float:
    """Train `model`'s trainable parameters on `dataset`; returns the wall seconds of Trainer construction
    + train(); `timings`, when given, receives them apart (`setup`, `train`)."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        trainer = make_trainer(model, dataset, tokenizer, train_cfg, seed, device, out, record, pad_to, callbacks)
        mark = time.perf_counter()
        trainer.train()
        end = time.perf_counter()
    if timings is not None:
        timings.update(setup=mark - start, train=end - mark)
    return end - start


def step_clock():
    """A TrainerCallback that records `time.perf_counter()` at the end of every optimizer step."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    return StepClock()


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def generate(model, tokenizer, sources: list[str], max_source_tokens: int, eval_cfg, device: torch.device) -> list[str]:
    """`model.generate` one batch at a time, in input order, greedy."""
    model.eval()
    outputs = []
    for start in range(0, len(sources), eval_cfg.batch_size):
        batch = tokenizer(sources[start : start + eval_cfg.batch_size], max_length=max_source_tokens, truncation=True,
                          padding=True, return_tensors="pt").to(device)
        ids = model.generate(**batch, max_new_tokens=eval_cfg.max_new_tokens, num_beams=1, do_sample=False,
                             no_repeat_ngram_size=eval_cfg.no_repeat_ngram_size or None)
        outputs += tokenizer.batch_decode(ids, skip_special_tokens=True)
    return outputs


def bleu(hyps: list[str], refs: list[str]) -> float:
    """sacrebleu corpus BLEU-4, unsmoothed, on `code_tokenize` tokens; 0-1."""
    from sacrebleu.metrics import BLEU

    from codecl.evaluation.metrics import code_tokenize

    line = lambda code: " ".join(re.sub(r"\s", "\u2581", t) for t in code_tokenize(code))  # noqa: E731
    return BLEU(tokenize="none", smooth_method="none").corpus_score([line(h) for h in hyps], [[line(r) for r in refs]]).score / 100
