"""`codecl export`: one task's model of a finished run as a plain `save_pretrained` folder.

The run is loaded as `codecl generate` loads it (`codecl.serve.generator.load`: the frozen base,
every stage's modules in training order) and the task's modules are activated as `generate`
activates them; then the model is made plain:

- LoRA: the active adapters are merged into the base's weights (PEFT `merge_and_unload`; arXiv
  2106.09685) — the task's own adapter, O-LoRA's summed adapters, a baseline's one `shared` adapter.
  A full fine-tuning baseline's weights are the base's weights already.
- An inserted block (`codecl.model.blocks` for T5, `codecl.model.causal_blocks` for decoder-only
  LMs) runs after layer k through a hook; the export puts it into the stack as layer k+1 and counts
  it in the config: T5 `encoder.block` / `decoder.block` and `num_layers` / `num_decoder_layers`
  (it has no relative-attention bias, as the loaded T5's layers 1.. have none); a causal LM's
  decoder layers (`model.layers`, `transformer.h`, …), `num_hidden_layers` (GPT-2 `n_layer`) and
  `layer_types` (the new layer is of layer k's type, as in the run). Every attention's `layer_idx`
  is renumbered to its layer's new position (the KV cache slot), as `from_pretrained` numbers them.
- Beside the weights: the tokenizer (a causal LM's pads on the left, with the run's pad token),
  `generation_config.json` with the run's decoding settings (`eval.max_new_tokens`, `num_beams`,
  `no_repeat_ngram_size`, greedy; a causal LM also its pad and end-of-sequence ids), and
  `codecl_export.json`: method, seed, task, run folder, base, the inserted layer, and how to turn a
  description into the model's input (`input`: for a causal LM the run's prompt template).
- `README.md`: a Hugging Face model card (`huggingface_hub.ModelCard` front matter: licence, base
  model, library, pipeline, tags) saying what the model is (base, method, task stream, the exported
  task's modules), its scores from results.json (this task after its own stage and after the last;
  every task after the last stage), how it was trained (optimiser, learning rate, epochs, batch,
  seed, LoRA and block settings) and the licence of the base (`base_licence`).

So `AutoModelFor{Seq2Seq,Causal}LM.from_pretrained(DIR).generate(**tokenizer(text, return_tensors="pt"))`
generates what `codecl generate` generates for that task. The weights are saved in float32 (a run
with `model.frozen_dtype=bfloat16` then matches up to rounding). The folder is written beside
`--output` and renamed into place; an existing non-empty `--output` is replaced only when it holds
an earlier export.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import shutil
from pathlib import Path

from torch import nn

from codecl import __version__
from codecl.errors import CheckpointError, ConfigError
from codecl.fileio import write_json, write_manifest

EXPORT_FILE = "codecl_export.json"
_SAMPLING_ONLY = ("temperature", "top_p", "top_k", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")


def export_model(run_dir: str | Path, method: str, task: str, output: str | Path, seed: int | None = None) -> dict:
    """Write `task`'s model of `method` (seed `seed`, default: the run's best) as a plain model folder
    at `output`; returns what `codecl_export.json` records (plus `replaced`: an earlier export was there)."""
    from codecl.results import is_joint
    from codecl.serve.generator import load, resolve_run, served_languages

    run_dir, output = Path(run_dir), Path(output)
    try:
        results, run = resolve_run(run_dir, method, seed)
    except ConfigError as exc:
        raise ConfigError(f"{run_dir}: {exc} (pass --method/--seed of a trained run)") from None
    tasks = served_languages(results, run) + (["joint"] if is_joint(run) else [])
    if task not in tasks:
        raise ConfigError(f"{run_dir}: {run['method']} seed {run['seed']} has no trained modules for task {task!r}; "
                          f"exportable: {', '.join(tasks)} (pass --task one of them)")
    replaced = _check_output(output)
    _check_stage_folders(run_dir, run)
    generator = load(run_dir, method=run["method"], seed=run["seed"], device="cpu")
    model, tokenizer, inserted, merged = plain_model(generator, task)
    cfg = generator.cfg
    info = {
        "format": 1, "codecl_version": __version__, "method": run["method"], "seed": run["seed"], "task": task,
        "modules": generator.module_for(task), "run_dir": str(run_dir.resolve()),
        "order": list(run.get("order") or results["tasks"]), "order_index": int(run.get("order_index", 0)),  # which of a --orders run's runs
        "base_model": {k: v for k, v in results["base_model"].items() if k != "path"},
        "auto_class": "AutoModelForSeq2SeqLM" if model.config.is_encoder_decoder else "AutoModelForCausalLM",
        "parameters": sum(p.numel() for p in model.parameters()), "lora_merged": merged, "inserted_layer": inserted,
        "dtype": "float32", "input": _input_format(tokenizer, cfg),
    }
    staging = output.parent / f".{output.name}.export-{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        model.generation_config = generation_config(model, tokenizer, cfg.eval)
        if inserted and inserted["stack"] == "decoder" and model.config.is_encoder_decoder:
            # transformers sizes a T5's KV cache by its encoder's layer count (num_layers): a decoder
            # with more layers fails with a cache, so the export decodes without one (same tokens).
            model.generation_config.use_cache = info["use_cache"] = False
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_json(staging / EXPORT_FILE, info)
        (staging / "README.md").write_text(model_card(results, run, task, cfg, info), encoding="utf-8")
        write_manifest(staging)
        _move_into_place(staging, output)
    except OSError as exc:
        raise ConfigError(f"{output}: cannot write the export ({exc.strerror or exc}); choose a writable --output") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**info, "replaced": replaced}


KNOWN_LICENCES = {
    "Salesforce/codet5": "bsd-3-clause", "Qwen/Qwen2.5-Coder": "apache-2.0", "Qwen/Qwen2.5": "apache-2.0",
    "bigcode/starcoder2": "bigcode-openrail-m", "bigcode/starcoderbase": "bigcode-openrail-m", "deepseek-ai/deepseek-coder": "other",
    "meta-llama/CodeLlama": "llama2", "codellama/CodeLlama": "llama2", "meta-llama/Llama-3": "llama3", "openai-community/gpt2": "mit",
    "gpt2": "mit", "google-t5/t5": "apache-2.0", "t5-": "apache-2.0", "HuggingFaceTB/SmolLM": "apache-2.0",
}
"""Licences (Hugging Face licence ids) of common bases, by hub-id prefix, for when the base's own card is not at hand."""


def base_licence(base_model: dict) -> tuple[str, str]:
    """(licence id, where it came from) of the run's base: `license:` in the front matter of a README.md
    beside the base's weights (a local folder, or a hub snapshot already in the local cache), else the
    table of common bases, else `other` (check the base's own card). The embedded base is codecl's:
    pretrained by codecl on its embedded corpus of public code, whose repositories' licences vary."""
    name, path = base_model.get("name") or "", base_model.get("path") or ""
    if name == "embedded":
        return "other", ("codecl's embedded base, pretrained by codecl on its embedded corpus (public code under the "
                         "licences of its source repositories)")
    for folder in (path, name):
        card = Path(folder) / "README.md" if folder else None
        if card is not None and card.is_file():
            try:
                from huggingface_hub import ModelCard

                licence = ModelCard.load(card).data.license
            except Exception:  # noqa: BLE001 - an unreadable card is no licence
                licence = None
            if licence:
                return str(licence), f"the base's model card ({card})"
    for prefix, licence in KNOWN_LICENCES.items():
        if name.startswith(prefix):
            return licence, f"the published licence of {prefix}* models"
    return "other", "unknown here: check the base model's own card"


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def model_card(results: dict, run: dict, task: str, cfg, info: dict) -> str:
    """The exported folder's README.md: front matter (licence, base, tags) and what, how well, how."""
    from huggingface_hub import ModelCardData

    base = results["base_model"]
    licence, licence_source = base_licence(base)
    causal = info["auto_class"] == "AutoModelForCausalLM"
    data = ModelCardData(
        license=licence, library_name="transformers", pipeline_tag="text-generation" if causal else "text2text-generation",
        base_model=None if base["name"] == "embedded" else base["name"],
        tags=["codecl", "continual-learning", "code-generation", run["method"], *(["lora"] if info["lora_merged"] else [])],
    )
    tasks, stages = results["tasks"], run["stages"]
    order = info["order"]
    scores = run["scores"]
    metrics = [m for m in scores if isinstance(scores[m], list)]
    column = tasks.index(task) if task in tasks else None
    lines = [f"# {base['name']} + codecl `{run['method']}` — task `{task}`", "",
             f"A plain `{info['auto_class']}` exported by codecl {info['codecl_version']} (`codecl export`): the frozen base "
             f"`{base['name']}` ({base['parameters']:,} parameters, fingerprint `{base.get('fingerprint')}`) with the modules "
             f"`{info['modules']}` of method `{run['method']}` (seed {run['seed']}) made part of it"
             + (": LoRA merged into the weights" if info["lora_merged"] else "")
             + (f"; an inserted {info['inserted_layer']['stack']} layer after layer {info['inserted_layer'].get('after_layer')}"
                if info.get("inserted_layer") else "") + f" — {info['parameters']:,} parameters in all.", "",
             f"Task stream, in training order: {' → '.join(order)}. This folder is the model of `{task}`.", "",
             "## Use", "", "```python", f"from transformers import {info['auto_class']}, AutoTokenizer",
             "tok = AutoTokenizer.from_pretrained(PATH)", f"model = {info['auto_class']}.from_pretrained(PATH)",
             "inputs = tok(TEXT, return_tensors='pt')  # TEXT: see `input` in codecl_export.json (the prompt format)",
             "print(tok.decode(model.generate(**inputs)[0], skip_special_tokens=True))", "```", "",
             f"## Scores (from the run's results.json, {cfg.eval.split} split; 0–1 scale, `loss`: nats per reference token)", ""]
    if column is not None:
        own = stages.index(task) if task in stages else None
        lines += [f"`{task}` after its own stage and after the last stage ({stages[-1]}):", "",
                  "| metric | after its own stage | after the last stage |", "|---|---|---|"]
        for m in metrics:
            lines.append(f"| {m} | {_fmt(scores[m][own][column]) if own is not None else 'n/a'} | {_fmt(scores[m][-1][column])} |")
        lines.append("")
    lines += ["Every task after the last stage (each with its own modules, as codecl evaluates them):", "",
              "| task | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for j, name in enumerate(tasks):
        lines.append(f"| {name} | " + " | ".join(_fmt(scores[m][-1][j]) for m in metrics) + " |")
    t, lora, block = cfg.train, cfg.method.lora, cfg.method.block
    from codecl.registry import BUILTIN_METHODS

    plugin = run["method"] not in BUILTIN_METHODS
    own = cfg.method.section(run["method"]) if plugin else None  # a plugin method's own settings (its config_class's defaults
    own = {} if plugin and own is None else own                  # when the run set none), not only method.lora's, made it
    own = dataclasses.asdict(own) if dataclasses.is_dataclass(own) else own
    lines += ["", "## How it was trained", "",
              f"- Continual learning, one stage per task in the order above; the base stays frozen (codecl method "
              f"`{run['method']}`).",
              f"- AdamW, learning rate {t.lr}, weight decay {t.weight_decay}, no scheduler, batch {t.batch_size}, {t.epochs} epoch(s) "
              f"per task, gradient clipping {t.grad_clip}, seed {run['seed']}, mixed precision `{t.mixed_precision}`.",
              f"- Inputs up to {cfg.data.max_source_tokens} tokens, targets up to {cfg.data.max_target_tokens}.",
              *([f"- LoRA merged from adapter(s) {', '.join(info['lora_merged'])}: r={lora.rank}, alpha={lora.alpha}, dropout "
                 f"{lora.dropout}, targets {list(lora.target_modules) or 'the family default'} (as configured in `method.lora`)."]
                if info["lora_merged"] and own is None else []),
              *([f"- LoRA merged from adapter(s) {', '.join(info['lora_merged'])}, set up by the plugin method `{run['method']}` "
                 f"from its own settings (below) and codecl's `method.lora` (r={lora.rank}, alpha={lora.alpha}, dropout {lora.dropout})."]
                if info["lora_merged"] and own is not None else []),
              *([f"- `method.{run['method']}` (the plugin method's own settings): "
                 + (", ".join(f"{k}={v}" for k, v in own.items()) or "none set") + "."] if own is not None else []),
              *([f"- Inserted block: {info['inserted_layer']['stack']} stack, after layer {info['inserted_layer']['after_layer']} "
                 f"(method.block.position {block.position}), init `{block.init}`, {info['inserted_layer']['parameters']:,} parameters."]
                if info.get("inserted_layer") else []),
              f"- Trainable parameters in this task's stage: {_fmt((run.get('trainable_parameters') or {}).get(task))}.", "",
              "## Licence", "", f"`{licence}`: {licence_source}. The exported weights are a derivative of the base model and "
              "keep its licence; the training data's licences apply as well.", ""]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)


def plain_model(generator, task: str) -> tuple[nn.Module, object, dict | None, list[str]]:
    """(plain transformers model, tokenizer, the inserted layer or None, the merged adapters) of
    `task` in a loaded run (`codecl.serve.generator.Generator`). Consumes the generator's model."""
    model = generator.model
    model.activate(generator.module_for(task))
    slot = getattr(model, "slot", None)
    block = copy.deepcopy(slot.block) if slot is not None and slot.block is not None else None
    if slot is not None:
        slot.remove()  # the block becomes an ordinary layer: no hook may run it a second time
    base, merged = model.base.float(), []
    if model.peft is not None:
        merged = list(model.peft.base_model.active_adapters)
        base = model.peft.merge_and_unload(adapter_names=merged) if merged else model.peft.unload()
    inserted = _insert_block(base, slot, block.float()) if block is not None else None
    return base.eval(), generator.tokenizer, inserted, merged


def _insert_block(base: nn.Module, slot, block: nn.Module) -> dict:
    """Put `block` into `base`'s stack right after the layer `slot` hooked, as an ordinary layer."""
    from codecl.model.causal import decoder_layers, is_causal, text_config

    if is_causal(base):
        layers, config = decoder_layers(base), text_config(base)
        index = slot.index + 1
        if getattr(config, "scale_attn_by_inverse_layer_idx", False) and index < len(layers):
            raise ConfigError(f"{type(base).__name__} scales attention by its layer index (scale_attn_by_inverse_layer_idx): "
                              "a layer inserted below the top changes the scale of the layers above it and cannot be exported exactly")
        layers.insert(index, block)
        config.num_hidden_layers = len(layers)
        if getattr(config, "layer_types", None):
            config.layer_types = list(config.layer_types[:index]) + [config.layer_types[slot.index]] + list(config.layer_types[index:])
        stack = "decoder"
    else:
        from codecl.model.blocks import neighbour_index

        t5_stack = base.encoder if slot.stack == "encoder" else base.decoder
        index = neighbour_index(base, slot.stack, slot.position) + 1
        layers = t5_stack.block
        layers.insert(index, block)
        t5_stack.config.num_layers = len(layers)
        setattr(base.config, "num_layers" if slot.stack == "encoder" else "num_decoder_layers", len(layers))
        stack = slot.stack
    for i, layer in enumerate(layers):  # each attention's KV-cache slot is its layer's position, as from_pretrained numbers them
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = i
    return {"stack": stack, "index": index, "after_layer": index, "parameters": sum(p.numel() for p in block.parameters())}


def generation_config(model: nn.Module, tokenizer, eval_cfg):
    """The model's generation config with the run's decoding settings (`codecl.evaluation.generate`):
    greedy or beam search, `max_new_tokens`, `no_repeat_ngram_size`; a causal LM stops at the tokens
    codecl stops at and pads with the run's pad token."""
    from codecl.model.causal import eos_ids, prompt_format

    config = copy.deepcopy(model.generation_config)
    config.max_new_tokens, config.num_beams, config.do_sample, config.use_cache = eval_cfg.max_new_tokens, eval_cfg.num_beams, False, True
    for name in _SAMPLING_ONLY:  # inert under greedy/beam decoding, and refused by GenerationConfig with do_sample=False
        if hasattr(config, name):
            setattr(config, name, None)
    if eval_cfg.no_repeat_ngram_size:
        config.no_repeat_ngram_size = eval_cfg.no_repeat_ngram_size
    if prompt_format(tokenizer) is not None:
        stops = eos_ids(model, tokenizer)
        config.pad_token_id, config.eos_token_id = tokenizer.pad_token_id, stops if len(stops) > 1 else stops[0]
        # batches continue every row from its last prompt token, as codecl's do (init_kwargs: saved with the tokenizer)
        tokenizer.padding_side = tokenizer.init_kwargs["padding_side"] = "left"
    return config


def _input_format(tokenizer, cfg) -> dict:
    """How a description becomes the exported model's input text (as the run formats it)."""
    from codecl.model.causal import prompt_format

    fmt, limit = prompt_format(tokenizer), cfg.data.max_source_tokens
    if fmt is None:
        return {"kind": "description", "max_source_tokens": limit,
                "how": "text = the description itself; inputs = tokenizer(text, return_tensors='pt') "
                       f"(codecl cuts a description to {limit} tokens, </s> included: add truncation=True, max_length={limit})"}
    how = ("text = prompt_template with {description} replaced by the description"
           + (", then tokenizer.apply_chat_template([{'role': 'user', 'content': text}], tokenize=False, add_generation_prompt=True); "
              "inputs = tokenizer(text, return_tensors='pt', add_special_tokens=False)" if fmt.chat
              else "; inputs = tokenizer(text, return_tensors='pt')")
           + f"; codecl first cuts the description to {limit} tokens; the output's new tokens are the code")
    return {"kind": "prompt_template", "prompt_template": fmt.template, "chat_template": fmt.chat, "max_source_tokens": limit, "how": how}


def _check_output(output: Path) -> bool:
    """True when `output` holds an earlier export (it will be replaced); refuse any other non-empty folder."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{output}: exists and is not a folder; choose a new or empty --output folder")
    if output.is_dir() and any(output.iterdir()):
        if not (output / EXPORT_FILE).is_file():
            raise ConfigError(f"{output}: not empty and not an earlier codecl export (no {EXPORT_FILE}); "
                              "choose a new or empty --output folder")
        return True
    return False


def _check_stage_folders(run_dir: Path, run: dict) -> None:
    """Every stage folder that loading reads is there (before the base is loaded)."""
    from codecl.methods.build import keeps_one_set_of_weights
    from codecl.registry import METHODS
    from codecl.results import run_path

    stages = run["stages"][1:]
    last_only = keeps_one_set_of_weights(METHODS.get(run["method"]))  # one set of weights: the last stage's
    seed_dir = run_path(run_dir, run)  # <method>/seed-<N>[-order-<k>]
    for stage in stages[-1:] if last_only else stages:
        if not (seed_dir / stage / "manifest.json").is_file():
            raise CheckpointError(f"{seed_dir / stage}: missing or incomplete, but results.json lists stage {stage!r} of "
                                  f"{run['method']} seed {run['seed']}; restore that folder, or export another method/seed")


def _move_into_place(staging: Path, output: Path) -> None:
    """Rename the finished `staging` folder to `output`, replacing an empty folder or an earlier export."""
    old = None
    if output.exists():
        old = output.parent / f".{output.name}.old-{os.getpid()}.tmp"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(output, old)
    try:
        os.replace(staging, output)
    except OSError:
        if old is not None:
            os.replace(old, output)  # put the earlier export back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
