"""Decoder-only causal LMs (Llama, Qwen2, GPT-2, StarCoder2 families …) as codecl bases.

The task is the same as for T5 — description → function code — written as one sequence:

    prompt = model.prompt_template with `{description}` replaced   (tokenized with the tokenizer's
             own specials, e.g. Llama's BOS; optionally wrapped by the tokenizer's chat template)
    target = the code's tokens + EOS                                (no EOS when the code was cut)

Training and the teacher-forced `loss` see `prompt + target` as the input and the same sequence as
labels with every prompt position set to -100, so only the code's tokens (EOS included) are scored.
`encode_pairs` stores such a pair in `EncodedPairs` as (input ids, label ids) of equal length; the
ordinary right-padding `pad_batch` then yields a causal-LM batch as is (input_ids, attention_mask,
labels, label padding -100) and the model shifts the labels itself — nothing downstream branches.

Generation left-pads the prompts (so every row continues from its last prompt token), decodes
greedily with the KV cache, and decodes only the new tokens; an output is `truncated` when it holds
no end-of-sequence within `eval.max_new_tokens`.

Which kind a base is comes from its config (`is_encoder_decoder`); the tokenizer of a causal base
carries its `PromptFormat` (`codecl_prompt`), which is what `encode_pairs` and `generate_codes`
dispatch on. A tokenizer without a pad token pads with EOS (padding is masked out everywhere).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from codecl.data.batching import IGNORE_INDEX, PROMPT_ATTRIBUTE, EncodedPairs
from codecl.errors import ConfigError

DEFAULT_PROMPT_TEMPLATE = "Description: {description}\nCode:\n"
"""The default `model.prompt_template`: the description, then a line `Code:` after which the code starts."""
PLACEHOLDER = "{description}"
_ATTRIBUTE = PROMPT_ATTRIBUTE  # codecl.data.batching.encode_pairs reads it

# LoRA's default targets per model family (config.model_type): every attention and MLP projection.
_LLAMA_STYLE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "t5": ("q", "k", "v", "o", "wi", "wo"),  # T5 v1.0 / CodeT5 (a gated FFN: wi_0, wi_1; see default_lora_targets)
    "gpt2": ("c_attn", "c_proj", "c_fc"),  # Conv1D layers: LoRA with fan_in_fan_out
    "gpt_bigcode": ("c_attn", "c_proj", "c_fc"),
    "starcoder2": ("q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"),
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    "phi": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
}
"""Families not listed use the Llama-style names (Llama, Qwen2, Mistral, Gemma, …) when the model has them."""


def is_causal(model: nn.Module) -> bool:
    """True for a decoder-only model (its config is not encoder-decoder)."""
    config = getattr(model, "config", None)
    return config is not None and not getattr(config, "is_encoder_decoder", False)


def text_config(model: nn.Module):
    config = model.config
    return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of a causal LM's decoder layers (`model.layers`, `transformer.h`, …)."""
    n = getattr(text_config(model), "num_hidden_layers", None)
    for path in ("model.layers", "transformer.h", "model.decoder.layers", "gpt_neox.layers", "transformer.layers"):
        node = model
        for part in path.split("."):
            node = getattr(node, part, None)
        if isinstance(node, nn.ModuleList) and (n is None or len(node) == n):
            return node
    lists = [m for _, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if not lists:
        raise ConfigError(f"{type(model).__name__}: cannot find its decoder layers (no ModuleList of num_hidden_layers={n})")
    return lists[0]


def linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) of a linear-like leaf: nn.Linear, transformers' Conv1D (weight (in, out)), or PEFT's wrapper."""
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.in_features), int(module.out_features)
    if type(module).__name__ == "Conv1D" and hasattr(module, "nx") and hasattr(module, "nf"):
        return int(module.nx), int(module.nf)
    return None


def linear_modules(model: nn.Module, targets) -> list[tuple[str, nn.Module]]:
    """Named linear-like modules whose last name part is one of `targets` (as PEFT matches them).
    PEFT's inner modules (`base_layer`, `lora_A.<adapter>`) do not end in a target name."""
    targets = set(targets)
    return [(name, m) for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in targets and linear_shape(m) is not None]


def default_lora_targets(model: nn.Module) -> tuple[str, ...]:
    """LoRA's default target modules for `model`'s family: every attention and MLP projection."""
    config = text_config(model)
    model_type = getattr(config, "model_type", "")
    if model_type in ("t5", "mt5", "umt5", "codet5") or (getattr(model.config, "is_encoder_decoder", False) and model_type not in LORA_TARGETS):
        gated = getattr(config, "is_gated_act", False)
        return ("q", "k", "v", "o", "wi_0", "wi_1", "wo") if gated else LORA_TARGETS["t5"]
    if model_type in LORA_TARGETS:
        return LORA_TARGETS[model_type]
    if linear_modules(model, _LLAMA_STYLE):
        return _LLAMA_STYLE
    # Unknown family: every linear leaf inside the decoder layers.
    names = sorted({name.rsplit(".", 1)[-1] for layer in decoder_layers(model) for name, m in layer.named_modules()
                    if linear_shape(m) is not None and "lora_" not in name and "base_layer" not in name})
    if not names:
        raise ConfigError(f"{type(model).__name__}: no linear layers found for LoRA; set method.lora.target_modules")
    return tuple(names)


def resolve_lora_targets(configured, model: nn.Module) -> tuple[str, ...]:
    """`method.lora.target_modules` for `model`: as configured, or (empty) the family default."""
    return tuple(configured) if configured else default_lora_targets(model)


def uses_conv1d(model: nn.Module, targets) -> bool:
    """True when the targeted layers are transformers' Conv1D (GPT-2): LoRA then needs fan_in_fan_out."""
    return any(type(getattr(m, "base_layer", m)).__name__ == "Conv1D" for _, m in linear_modules(model, targets))


# ---------------------------------------------------------------- tokenizer and prompt


@dataclass(frozen=True)
class PromptFormat:
    """How a description becomes a causal LM's prompt (`model.prompt_template`, `model.chat_template`)."""

    template: str = DEFAULT_PROMPT_TEMPLATE
    chat: bool = False

    def render(self, tokenizer, description: str) -> str:
        """The prompt text for one (already truncated) description."""
        text = self.template.replace(PLACEHOLDER, description)
        if self.chat:
            text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        return text

    def prompt_ids(self, tokenizer, descriptions: list[str], max_source_tokens: int) -> tuple[list[list[int]], int]:
        """Token ids of every prompt, each description cut to `max_source_tokens` tokens first;
        returns the prompts and how many descriptions were cut."""
        if not descriptions:
            return [], 0
        described = tokenizer(list(descriptions), add_special_tokens=False)["input_ids"]
        texts, cut = [], 0
        for text, ids in zip(descriptions, described):
            if len(ids) > max_source_tokens:
                text, cut = tokenizer.decode(ids[:max_source_tokens]), cut + 1
            texts.append(self.render(tokenizer, text))
        # A chat template writes its own specials (BOS and all); a plain prompt gets the tokenizer's (Llama's BOS).
        return tokenizer(texts, add_special_tokens=not self.chat)["input_ids"], cut

    def encode_pairs(self, tokenizer, sources: list[str], targets: list[str], max_source_tokens: int,
                     max_target_tokens: int) -> EncodedPairs:
        """What `codecl.data.batching.encode_pairs` gives for a tokenizer carrying this format: `encode_causal_pairs`."""
        return encode_causal_pairs(tokenizer, self, sources, targets, max_source_tokens, max_target_tokens)


def configure_tokenizer(tokenizer, template: str = DEFAULT_PROMPT_TEMPLATE, chat: bool = False):
    """Make `tokenizer` a causal base's: a pad token (EOS when it has none), and its `PromptFormat`."""
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"{type(tokenizer).__name__}: a causal LM's tokenizer needs an end-of-sequence token")
    if PLACEHOLDER not in template:
        raise ConfigError(f"model.prompt_template must contain {PLACEHOLDER}, got {template!r}")
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ConfigError("model.chat_template=true, but the tokenizer has no chat template")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    setattr(tokenizer, _ATTRIBUTE, PromptFormat(template, chat))
    return tokenizer


def prompt_format(tokenizer) -> PromptFormat | None:
    """The causal prompt format a tokenizer carries; None for an encoder-decoder base's tokenizer."""
    return getattr(tokenizer, _ATTRIBUTE, None)


def check_sequence_length(model: nn.Module, tokenizer, run_cfg, name: str = "") -> None:
    """A run's longest sequences must fit a causal base's positions (`max_position_embeddings`,
    GPT-2's `n_positions`): a training example, prompt + code + EOS, is at most the template's own
    tokens + `data.max_source_tokens` + `data.max_target_tokens` + 1; a generation, the prompt +
    `eval.max_new_tokens`. Longer would crash (learned positions) or extrapolate rotary positions
    the base never saw, so it is a ConfigError naming the fields to lower. No limit known: no check."""
    limit = getattr(text_config(model), "max_position_embeddings", None)
    fmt = prompt_format(tokenizer)
    if fmt is None or isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        return
    overhead = len(fmt.prompt_ids(tokenizer, [""], 1)[0][0])  # the template's (and any chat template's) own tokens
    data, eval_cfg = run_cfg.data, run_cfg.eval
    prompt = f"{overhead} prompt-template tokens + data.max_source_tokens={data.max_source_tokens}"
    needs = [(overhead + data.max_source_tokens + data.max_target_tokens + 1, "a training sequence",
              f"{prompt} + data.max_target_tokens={data.max_target_tokens} + 1 end-of-sequence", "data.max_target_tokens"),
             (overhead + data.max_source_tokens + eval_cfg.max_new_tokens, "a generation",
              f"{prompt} + eval.max_new_tokens={eval_cfg.max_new_tokens}", "eval.max_new_tokens")]
    problems = [f"{what} can reach {n} tokens ({parts})" for n, what, parts, _ in needs if n > limit]
    if problems:
        fields = " or ".join(["data.max_source_tokens"] + [field for n, _, _, field in needs if n > limit])
        raise ConfigError(f"model.name={name or type(model).__name__}: {'; '.join(problems)}, more than the base's "
                          f"max_position_embeddings={limit}; lower {fields}, or use a base with longer positions")


def encode_causal_pairs(tokenizer, fmt: PromptFormat, sources: list[str], targets: list[str], max_source_tokens: int,
                        max_target_tokens: int):
    """(description, code) pairs as causal-LM sequences: `source_ids` = prompt + code (+ EOS),
    `target_ids` = the same with the prompt's positions -100 (see the module docstring)."""
    eos = tokenizer.eos_token_id
    prompts, cut_src = fmt.prompt_ids(tokenizer, sources, max_source_tokens)
    codes = tokenizer(list(targets), add_special_tokens=False)["input_ids"] if targets else []
    inputs, labels, cut_tgt = [], [], 0
    for prompt, code in zip(prompts, codes):
        target = list(code) + [eos]
        if len(target) > max_target_tokens:  # cut: no EOS, the model must not learn to stop mid-function
            target, cut_tgt = list(code[:max_target_tokens]), cut_tgt + 1
        inputs.append(list(prompt) + target)
        labels.append([IGNORE_INDEX] * len(prompt) + target)
    return EncodedPairs(inputs, labels, cut_src, cut_tgt)


def eos_ids(model: nn.Module, tokenizer) -> list[int]:
    """Tokens that end a generation: the tokenizer's EOS (what training appends) and the model's own."""
    ids = [tokenizer.eos_token_id]
    own = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for i in own if isinstance(own, (list, tuple)) else [own]:
        if i is not None and i not in ids:
            ids.append(int(i))
    return ids


def left_pad(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad prompts to the longest: every row's last prompt token is the last column."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, S)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        if ids:
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention_mask[row, width - len(ids):] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _generation_config_of(model):
    for candidate in (model, getattr(model, "model", None), getattr(model, "base", None)):
        if candidate is not None and getattr(candidate, "generation_config", None) is not None:
            return candidate
    return model


@torch.no_grad()
def generate_with_flags(model, tokenizer, fmt: PromptFormat, sources: list[str], max_source_tokens: int, eval_cfg,
                        device: torch.device, progress: bool = True, desc: str = "eval", dist=None) -> list[tuple[str, bool]]:
    """`(code, truncated)` for every description, in input order: left-padded, length-sorted batches,
    greedy (or beam) decoding with the KV cache, only the new tokens decoded."""
    from tqdm.auto import tqdm

    from codecl.distributed import current

    dist = dist or current()
    prompts, _ = fmt.prompt_ids(tokenizer, sources, max_source_tokens)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    stops = eos_ids(_generation_config_of(model), tokenizer)
    outputs: list[tuple[str, bool]] = [("", False)] * len(prompts)
    model.eval()
    batches = [order[start : start + eval_cfg.batch_size] for start in range(0, len(order), eval_cfg.batch_size)]
    done: list[tuple[int, tuple[str, bool]]] = []
    for idx in tqdm(dist.shard(batches), desc=desc, disable=not progress, leave=False, unit="batch"):
        batch = {k: v.to(device) for k, v in left_pad([prompts[i] for i in idx], tokenizer.pad_token_id).items()}
        with dist.autocast():
            generated = model.generate(
                **batch, max_new_tokens=eval_cfg.max_new_tokens, num_beams=eval_cfg.num_beams, do_sample=False, use_cache=True,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=stops,
                **({"no_repeat_ngram_size": eval_cfg.no_repeat_ngram_size} if eval_cfg.no_repeat_ngram_size else {}),
            )
        new = generated[:, batch["input_ids"].shape[1]:]  # (B, new tokens): only what the model wrote
        for i, row in zip(idx, new.tolist()):
            end = next((j for j, t in enumerate(row) if t in stops), None)
            done.append((i, (tokenizer.decode(row[:end], skip_special_tokens=True), end is None)))
    for i, (text, cut) in dist.gather(done):  # one process: `done` itself
        outputs[i] = (text, bool(cut))
    return outputs


def fingerprint_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Fixed tensors of a causal LM for its fingerprint: the input embedding, the first decoder
    layer's first weight, the last layer's last weight, and the output embedding when untied."""
    tensors = [model.get_input_embeddings().weight]
    layers = decoder_layers(model)
    tensors += [next(iter(layers[0].parameters())), list(layers[-1].parameters())[-1]]
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None and out.weight is not tensors[0]:
        tensors.append(out.weight)
    return tensors
