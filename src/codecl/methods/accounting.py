"""`codecl params`: every method's parameter accounting, without training.

The base is built from its config with random weights (the counts depend on shapes only):
a hub id or local folder through `AutoConfig` (a folder holding only `config.json` is enough), the
embedded base from its configured shape (or the cached build when one exists, whose vocabulary may
be a little smaller). A decoder-only base is built on the meta device: shapes without memory, so a
0.5B-parameter Qwen2.5-Coder is counted in a second.
"""
from __future__ import annotations

from pathlib import Path

import torch

from codecl.config import RunConfig
from codecl.methods.build import build_model
from codecl.model.base import BaseInfo, count_parameters, freeze


def _base_from_config(cfg: RunConfig):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    if cfg.model.name == "embedded":
        from codecl.model.embedded import model_config

        config = model_config(cfg.model.embedded, cfg.model.embedded.vocab_size, pad_token_id=0, eos_token_id=1)
    else:
        try:
            config = AutoConfig.from_pretrained(cfg.model.name)
        except OSError as exc:
            from codecl.errors import ConfigError

            raise ConfigError(f"model.name={cfg.model.name}: its config cannot be had offline; name a local folder "
                              "saved with save_pretrained, or use the embedded base") from exc
    if not getattr(config, "is_encoder_decoder", False):
        with torch.device("meta"):
            return freeze(AutoModelForCausalLM.from_config(config))
    return freeze(AutoModelForSeq2SeqLM.from_config(config))


def parameter_report(cfg: RunConfig) -> dict:
    """{"base": N, "methods": {name: {"trainable_per_task": n, "stored_after": {"1": n, ...}}}}.

    `stored_after` is keyed by how many tasks have been trained: the joint baseline, whose one
    stage trains them all, has the single key `len(tasks)`."""
    report: dict = {"base": None, "methods": {}}
    for method in cfg.methods:
        base = _base_from_config(cfg)
        report["base"] = count_parameters(base)
        info = BaseInfo(cfg.model.name, str(Path(cfg.model.name)), "accounting", report["base"])
        cm = build_model(base, method, cfg.method, info)
        stored, trainable, covered = {}, [], 0
        for stage in cm.stages(list(cfg.tasks)):
            cm.add_task(stage.name)
            trainable.append(cm.task_parameter_count(stage.name))
            covered += len(stage.tasks)
            stored[str(covered)] = cm.stored_parameter_count()
        report["methods"][method] = {"trainable_per_task": trainable[0], "stored_after": stored}
        peft = getattr(cm, "peft", None)
        if peft is not None:  # the rank in use: a `match_block` rank is resolved against this base
            report["methods"][method]["lora_rank"] = next(iter(peft.peft_config.values())).r
    return report
