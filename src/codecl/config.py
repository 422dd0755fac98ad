"""Typed, frozen, documented configuration; YAML presets; dotted `--set` overrides.

Every field is documented by the string literal under it; `__post_init__` validates it.
Construction collects *all* errors of the whole tree into one `ConfigError` message
(torchtune style) so a user fixes a config in one pass.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from codecl.errors import ConfigError
from codecl.languages import executable_languages, known_languages
from codecl.registry import ALWAYS_COMPUTED, BUILTIN_METHODS, DEFAULT_METRICS, METHODS, METRICS, STUDY_METHODS, per_example_fields_clash

LANGUAGES = tuple(known_languages())
"""Every language (task name) of the registry `codecl.languages.LANGUAGES`, which is the one place they are described."""
METHOD_NAMES = STUDY_METHODS
"""The study's four methods (the default `methods`). Every method — these, the baselines and plugins'
— is named in `codecl.registry.METHODS` only."""
EXEC_LANGUAGES = tuple(executable_languages())
"""Languages whose generated code the sandbox can run (`eval.exec_benchmarks`; `LanguageSpec.executes`)."""


def _languages() -> tuple[str, ...]:
    """Every registered language now, plugins' (`codecl.languages` entry points) included: what validation reads
    (`LANGUAGES` above is fixed when this module is imported)."""
    return tuple(known_languages())


class _Checks:
    """Collects validation failures of one dataclass."""

    def __init__(self, prefix: str):
        self.prefix, self.errors = prefix, []

    def require(self, ok: bool, name: str, message: str) -> None:
        if not ok:
            self.errors.append(f"{self.prefix}{name} {message}")

    def raise_if_any(self) -> None:
        if self.errors:
            raise ConfigError("; ".join(self.errors))


def _check_revision(c: _Checks, name: str, value: str | None) -> None:
    """A hub revision: None, or a non-empty commit hash / tag / branch without spaces."""
    c.require(value is None or (bool(value) and not any(ch.isspace() for ch in value)), name,
              f"must be a commit hash, tag or branch (no spaces) or null, got {value!r}")


TASK_DIRECTIONS = ("nl_to_code", "code_to_nl", "code_to_code")
"""What a task maps: a description to code (CodeSearchNet's task, every built-in language), code to a
description (summarisation: outputs are text, so `syntax_pass` is null), or code to code (translation,
repair). The output's language is the task's `language` unless the direction is code_to_nl."""
TASK_FORMATS = ("pairs", "codesearchnet")


@dataclass(frozen=True)
class UserTaskConfig:
    """A task defined from the user's own data (`data.tasks.<NAME>`; `--tasks NAME=PATH` makes one with `path`)."""

    path: str | None = None
    """A folder holding `train`, `valid` (or `validation`/`dev`) and `test` files (`.jsonl`, `.jsonl.gz`, `.csv`,
    `.parquet`, `.json`), or one such file, split deterministically by `split_fractions`."""
    hub_dataset: str | None = None
    """Instead of `path`: a Hugging Face dataset id read with `datasets.load_dataset` (needs the network or its cache)."""
    hub_config: str | None = None
    """The hub dataset's configuration (subset) name, if it has several."""
    hub_revision: str | None = None
    """The hub dataset's revision (commit hash, tag or branch); None = latest `main`."""
    hub_splits: tuple[str, ...] = ("train", "validation", "test")
    """The hub dataset's split names for train, valid and test; a dataset with only one split: give one name
    and the rows are split by `split_fractions`."""
    embedded: bool = False
    """Instead of `path`/`hub_dataset`: the embedded corpus of `language` (CodeSearchNet format), usually narrowed by
    `match` — e.g. a domain-incremental stream of standard-library areas. The corpus's training rows are split by
    `split_fractions` (the corpus splits by source file, so one area may lie in one split), its valid/test rows stay
    evaluation rows; the embedded base never pretrains on the task's valid/test pairs."""
    format: str = "pairs"
    """`pairs`: rows with an input and a target field (`input_field`, `target_field`); `codesearchnet`: CodeSearchNet
    records (`code`, `docstring`, ...) turned into (description, code) pairs by codecl's CodeSearchNet cleaning
    (the direction then decides which side is the input). The embedded corpus is always `codesearchnet`."""
    input_field: str = "input"
    """`pairs`: the field holding the model input."""
    target_field: str = "target"
    """`pairs`: the field holding the reference output."""
    id_field: str | None = None
    """`pairs`: a field holding a stable example id (default: `file:line`)."""
    language: str | None = None
    """The code's language (syntax checks, execution): a registered language (`codecl list languages`). None: the
    rows' `language` field when they have one (all rows must agree), else python."""
    direction: str = "nl_to_code"
    """nl_to_code, code_to_nl or code_to_code (see TASK_DIRECTIONS)."""
    clean: bool = True
    """`pairs`: whitespace-trimmed fields, empty rows dropped, repeated (input, target) rows dropped, and valid/test
    rows whose target is a training target dropped (no leak), all counted. `codesearchnet`: codecl's CodeSearchNet
    cleaning (always on: it is what turns records into pairs)."""
    match: tuple[str, ...] = ()
    """`FIELD=REGEX` filters on the raw rows (all must match, `re.search`), e.g. `path=^(email|http)/` for the part of
    the embedded corpus from those packages."""
    split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    """train/valid/test shares when the data has one split only: each row goes to a split by a hash of its id."""

    def check(self, name: str) -> list[str]:
        c = _Checks(f"data.tasks.{name}.")
        sources = [k for k, on in (("path", bool(self.path)), ("hub_dataset", bool(self.hub_dataset)), ("embedded", self.embedded)) if on]
        c.require(len(sources) == 1, "path", f"the task needs exactly one of path, hub_dataset or embedded: true, got {sources or 'none'}")
        c.require(self.format in TASK_FORMATS, "format", f"must be pairs or codesearchnet, got {self.format!r}")
        c.require(self.format == "pairs" or self.direction != "code_to_code", "direction",
                  "code_to_code needs format pairs (CodeSearchNet records hold a description and code)")
        c.require(not self.embedded or self.language is not None, "language", "must be set for an embedded task (the corpus of that language)")
        c.require(self.language is None or self.language in _languages(), "language",
                  f"must be one of {', '.join(_languages())} (or null: the rows' language field, else python), got {self.language!r}")
        c.require(self.direction in TASK_DIRECTIONS, "direction", f"must be one of {', '.join(TASK_DIRECTIONS)}, got {self.direction!r}")
        c.require(bool(self.input_field) and bool(self.target_field) and self.input_field != self.target_field, "input_field",
                  "and target_field must be two different field names")
        c.require(1 <= len(self.hub_splits) <= 3 and all(self.hub_splits), "hub_splits", f"must name 1 to 3 splits, got {list(self.hub_splits)}")
        for item in self.match:
            key, sep, pattern = item.partition("=")
            c.require(bool(sep) and bool(key.strip()), "match", f"items must be FIELD=REGEX, got {item!r}")
            if sep:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    c.require(False, "match", f"{item!r}: bad regular expression ({exc})")
        f = self.split_fractions
        c.require(len(f) == 3 and all(x >= 0 for x in f) and f[0] > 0 and f[2] > 0 and abs(sum(f) - 1) < 1e-6, "split_fractions",
                  f"must be three non-negative shares (train and test > 0) summing to 1, got {list(f)}")
        _check_revision(c, "hub_revision", self.hub_revision)
        return c.errors


@dataclass(frozen=True)
class DataConfig:
    source: str = "embedded"
    """Where task data comes from: `embedded` (corpus built offline from installed source code),
    `local` (CodeSearchNet files/folders under `path`), or `hub` (a Hugging Face dataset)."""
    path: str | None = None
    """For `local`: a CodeSearchNet folder (original `<lang>/final/jsonl/<split>/` or CodeXGLUE
    `<lang>/<split>.jsonl` layout). For `embedded`: where to cache the built corpus (default: the user cache)."""
    hub_dataset: str = "claudios/code_search_net"
    """Hub dataset id for `source: hub` (needs a network)."""
    hub_revision: str | None = None
    """For `source: hub`: the dataset repository's revision (a commit hash, tag or branch) passed to
    `datasets.load_dataset(..., revision=...)`, so a rerun reads the same data; None = the latest
    `main`. Ignored for `local` and `embedded` data. Quote a hash in YAML (`"2678080e..."`)."""
    extra_sources: tuple[str, ...] = ()
    """Extra source folders for the embedded corpus builder (`--source`)."""
    max_train_examples: int | None = None
    """Cap on training pairs per task after cleaning (None = all)."""
    max_valid_examples: int | None = None
    """Cap on evaluation pairs per task (of `eval.split`, valid or test; None = the whole split)."""
    max_source_tokens: int = 64
    """Truncate the description (model input) to this many tokens; truncations are counted."""
    max_target_tokens: int = 256
    """Truncate the reference code (labels) to this many tokens; truncations are counted. A cut code
    gets no end-of-sequence label (its labels just stop), so </s> is taught only at real ends."""
    max_target_lines: int | None = None
    """Drop functions longer than this many lines before capping (None = keep all)."""
    tasks: dict[str, UserTaskConfig] = field(default_factory=dict)
    """Tasks defined from your own data, by name (`codecl.data.usertasks`); name them in `tasks` like the
    built-in languages. `--tasks NAME=PATH` adds `NAME: {path: PATH}`. Caps and token limits above apply to them too."""

    def __post_init__(self):
        c = _Checks("data.")
        c.require(self.source in ("embedded", "local", "hub"), "source", f"must be embedded, local or hub, got {self.source!r}")
        c.require(self.source != "local" or bool(self.path), "path", "must name a CodeSearchNet folder when data.source is local")
        for name in ("max_train_examples", "max_valid_examples", "max_target_lines"):
            v = getattr(self, name)
            c.require(v is None or v > 0, name, f"must be positive or null, got {v}")
        for name in ("max_source_tokens", "max_target_tokens"):
            c.require(8 <= getattr(self, name) <= 4096, name, f"must be in [8, 4096], got {getattr(self, name)}")
        _check_revision(c, "hub_revision", self.hub_revision)
        for name, spec in self.tasks.items():
            c.require(_TASK_NAME.fullmatch(name) is not None and name not in _languages() and name not in _RESERVED_NAMES, "tasks",
                      f"name {name!r} must be letters, digits, '_', '-' or '.', start with a letter, and not be a built-in language "
                      f"or one of {', '.join(_RESERVED_NAMES)}")
            c.errors += spec.check(name)
        c.raise_if_any()


_TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")
_RESERVED_NAMES = ("base", "joint", "predictions", "router")


@dataclass(frozen=True)
class EmbeddedModelConfig:
    kind: str = "t5"
    """`t5` (an encoder-decoder, the study's architecture) or `llama` (a decoder-only Llama of 2 × num_layers
    layers, about the T5's parameters, pretrained as a causal LM on the same corpus and tokenizer, its bimodal
    pairs written with `model.prompt_template`). `bench/kind_curve.py` measures both at equal pretraining time."""
    d_model: int = 256
    """Hidden size of the embedded T5."""
    num_layers: int = 4
    """Encoder layers (the decoder gets as many); `llama`: 2 × num_layers decoder layers."""
    num_heads: int = 4
    """Attention heads (d_kv = d_model / num_heads)."""
    d_ff: int = 1024
    """Feed-forward inner size."""
    vocab_size: int = 4096
    """Byte-level BPE vocabulary size, including T5's specials and 100 sentinels."""
    pretrain_steps: int = 600
    """Pretraining optimisation steps: the budget (steps, not minutes, so a base is reproducible; a run
    of N steps is exactly the first N steps of a longer one, and `bench/pretrain_curve.py` gives the
    scores and idle-machine minutes of every budget from one run)."""
    pretrain_batch_size: int = 32
    """Pretraining batch size."""
    pretrain_lr: float = 2e-3
    """Pretraining AdamW peak learning rate: linear warm-up over `pretrain_warmup_steps`, then
    decay as 1/sqrt(step) (T5's schedule; it does not depend on `pretrain_steps`)."""
    pretrain_warmup_steps: int = 50
    """Linear learning-rate warm-up steps of pretraining."""
    pretrain_dropout: float = 0.0
    """Dropout while pretraining (T5 v1.1 turned it off: a base this small and briefly trained
    underfits); the saved base keeps dropout_rate 0.1 for the tasks' training."""
    max_pretrain_examples: int | None = 6000
    """Cap on corpus texts used to train the tokenizer and the model."""
    prefix_lm_fraction: float = 0.5
    """Share of the non-bimodal pretraining examples that use the prefix-LM objective (continue a cut
    piece of code) instead of span corruption; it teaches the decoder to write long code, as T5's
    prefix-LM variant."""
    bimodal_fraction: float = 0.3
    """Share of pretraining examples that are description -> code pairs (CodeT5's bimodal generation,
    arXiv 2109.00859), drawn only from train pairs the tasks never train on (those beyond
    data.max_train_examples); 0 when there are none. Without it the base ignores its input."""

    def __post_init__(self):
        c = _Checks("model.embedded.")
        c.require(self.kind in ("t5", "llama"), "kind", f"must be t5 or llama, got {self.kind!r}")
        c.require(self.d_model > 0 and self.num_heads > 0 and self.d_model % self.num_heads == 0, "d_model", "must be a positive multiple of num_heads")
        c.require(self.num_layers >= 1, "num_layers", "must be >= 1")
        c.require(self.vocab_size >= 512, "vocab_size", f"must be >= 512, got {self.vocab_size}")
        c.require(self.pretrain_steps >= 0, "pretrain_steps", "must be >= 0")
        c.require(0 < self.pretrain_lr < 1, "pretrain_lr", "must be in (0, 1)")
        c.require(self.pretrain_warmup_steps >= 1, "pretrain_warmup_steps", f"must be >= 1, got {self.pretrain_warmup_steps}")
        c.require(0 <= self.pretrain_dropout < 1, "pretrain_dropout", f"must be in [0, 1), got {self.pretrain_dropout}")
        c.require(0 <= self.prefix_lm_fraction <= 1, "prefix_lm_fraction", f"must be in [0, 1], got {self.prefix_lm_fraction}")
        c.require(0 <= self.bimodal_fraction <= 1, "bimodal_fraction", f"must be in [0, 1], got {self.bimodal_fraction}")
        c.raise_if_any()


@dataclass(frozen=True)
class ModelConfig:
    name: str = "embedded"
    """`embedded` (built and cached offline), a Hugging Face hub id (e.g. Salesforce/codet5-small),
    or a local folder saved with `save_pretrained`."""
    embedded: EmbeddedModelConfig = field(default_factory=EmbeddedModelConfig)
    """Shape and pretraining budget of the embedded base."""
    frozen_dtype: str = "float32"
    """dtype of the frozen base weights: float32 or bfloat16 (trainable modules stay float32)."""
    revision: str | None = None
    """For a hub id in `name`: the model repository's revision (a commit hash, tag or branch) passed to
    `from_pretrained(..., revision=...)` for the weights and the tokenizer, so a rerun loads the same
    base; None = the latest `main`. Ignored for `embedded` and for a local folder. Quote a hash in YAML."""
    prompt_template: str = "Description: {description}\nCode:\n"
    """Decoder-only (causal LM) bases only: the prompt the model continues with the code; `{description}`
    is replaced by the description (cut to data.max_source_tokens tokens first). The code follows it,
    then end-of-sequence; the loss is on the code's tokens only (`codecl.model.causal`). Ignored for T5."""
    chat_template: bool = False
    """Decoder-only bases only: wrap the prompt as a user message with the tokenizer's chat template
    (`apply_chat_template`, generation prompt added), for instruct models."""

    def __post_init__(self):
        c = _Checks("model.")
        c.require(bool(self.name), "name", "must not be empty")
        c.require("{description}" in self.prompt_template, "prompt_template", f"must contain {{description}}, got {self.prompt_template!r}")
        _check_revision(c, "revision", self.revision)
        c.require(self.frozen_dtype in ("float32", "bfloat16"), "frozen_dtype", f"must be float32 or bfloat16, got {self.frozen_dtype!r}")
        c.raise_if_any()


@dataclass(frozen=True)
class LoraConfig:
    rank: int | str = 16
    """LoRA rank r (arXiv 2106.09685), or `match_block`: the smallest rank whose LoRA parameters are at
    least those of one inserted block (method.block), resolved against the base model when it is built
    (`codecl.methods.rank`), so LoRA and a block compare at equal size."""
    alpha: int = 32
    """LoRA scaling alpha (scale = alpha / r)."""
    dropout: float = 0.1
    """Dropout on the LoRA input."""
    target_modules: tuple[str, ...] = ()
    """Last names of the linear layers that get LoRA; empty = the base family's default, every attention
    and MLP projection (`codecl.model.causal.default_lora_targets`): T5 `q,k,v,o,wi,wo` (T5 v1.0 / CodeT5
    use `wi`, not `wi_0/wi_1`), Llama/Qwen2/Mistral `q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj`,
    GPT-2 `c_attn,c_proj,c_fc` (Conv1D: fan_in_fan_out), StarCoder2 `q_proj,k_proj,v_proj,o_proj,c_fc,c_proj`."""

    def __post_init__(self):
        c = _Checks("method.lora.")
        if isinstance(self.rank, str):
            c.require(self.rank == "match_block", "rank", f"must be an integer >= 1 or match_block, got {self.rank!r}")
        else:
            c.require(self.rank >= 1, "rank", f"must be >= 1, got {self.rank}")
        c.require(self.alpha > 0, "alpha", f"must be > 0, got {self.alpha}")
        c.require(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        c.raise_if_any()


@dataclass(frozen=True)
class BlockConfig:
    stack: str = "encoder"
    """Which stack gets the inserted block: encoder or decoder, or auto (the encoder of a T5 base, the
    decoder of a decoder-only base, which has no encoder: `encoder` is an error there)."""
    position: int = -1
    """Insert after this layer (1-based; -1 = after the top layer, the study's "after layer 6")."""
    init: str = "identity"
    """identity (copy of the layer below with output projections zeroed: LLaMA Pro, arXiv 2401.02415),
    copy (plain copy of the layer below), or random."""
    shared_after_first: str = "train"
    """hybrid_shared only: `train` (the shared block is trained again with every task, as in the study)
    or `freeze` (trained in the first task's stage only; later stages train their LoRA adapter alone)."""

    def __post_init__(self):
        c = _Checks("method.block.")
        c.require(self.shared_after_first in ("train", "freeze"), "shared_after_first", f"must be train or freeze, got {self.shared_after_first!r}")
        c.require(self.stack in ("encoder", "decoder", "auto"), "stack", f"must be encoder, decoder or auto, got {self.stack!r}")
        c.require(self.position == -1 or self.position >= 1, "position", f"must be -1 (top) or >= 1 (after that layer; block 0 holds T5's relative position bias), got {self.position}")
        c.require(self.init in ("identity", "copy", "random"), "init", f"must be identity, copy or random, got {self.init!r}")
        c.raise_if_any()


_WEIGHTS = ("lora", "full")


@dataclass(frozen=True)
class JointConfig:
    base: str = "lora"
    """What the joint (multitask) baseline trains: lora (one adapter, method.lora settings) or full (the whole model)."""

    def __post_init__(self):
        c = _Checks("method.joint.")
        c.require(self.base in _WEIGHTS, "base", f"must be lora or full, got {self.base!r}")
        c.raise_if_any()


@dataclass(frozen=True)
class ReplayConfig:
    base: str = "lora"
    """What replay trains across tasks: lora (one adapter carried across tasks) or full (the whole model)."""
    buffer_per_task: int = 50
    """Training examples kept from each finished task and mixed into every later stage (sampled from the seed)."""

    def __post_init__(self):
        c = _Checks("method.replay.")
        c.require(self.base in _WEIGHTS, "base", f"must be lora or full, got {self.base!r}")
        c.require(self.buffer_per_task >= 1, "buffer_per_task", f"must be >= 1 (use sequential_ft for no replay), got {self.buffer_per_task}")
        c.raise_if_any()


@dataclass(frozen=True)
class EwcConfig:
    base: str = "lora"
    """What EWC trains across tasks: lora (one adapter carried across tasks) or full (the whole model)."""
    lambda_penalty: float = 1000.0
    """λ of the penalty λ/2 Σ F (θ − θ*)² (Kirkpatrick et al. 2017); named so because `lambda` is a Python keyword."""
    fisher_batches: int = 20
    """Training batches of a finished task that estimate its diagonal Fisher (fewer if the task has fewer)."""

    def __post_init__(self):
        c = _Checks("method.ewc.")
        c.require(self.base in _WEIGHTS, "base", f"must be lora or full, got {self.base!r}")
        c.require(self.lambda_penalty >= 0, "lambda_penalty", f"must be >= 0 (0 turns the penalty off), got {self.lambda_penalty}")
        c.require(self.fisher_batches >= 1, "fisher_batches", f"must be >= 1, got {self.fisher_batches}")
        c.raise_if_any()


@dataclass(frozen=True)
class OLoraConfig:
    lambda_orth: float = 0.5
    """λ1 of O-LoRA's Σ_s<t ‖A_s A_tᵀ‖²_F (arXiv 2310.14152), summed over layers."""
    lambda_l2: float = 0.0
    """λ2 of the L2 penalty on the new adapter's weights (0 = off)."""

    def __post_init__(self):
        c = _Checks("method.olora.")
        c.require(self.lambda_orth >= 0, "lambda_orth", f"must be >= 0, got {self.lambda_orth}")
        c.require(self.lambda_l2 >= 0, "lambda_l2", f"must be >= 0, got {self.lambda_l2}")
        c.raise_if_any()


@dataclass(frozen=True)
class MergeConfig:
    weights: str = "mean"
    """Weight of each task's adapter in the merge: mean (1/T each, T = tasks merged so far) or sum (1 each).
    TIES' disjoint merge already averages the kept values, so `sum` is the TIES paper's λ = 1."""
    density: float = 0.5
    """merge_ties / merge_dare: fraction of each task's ΔW entries kept (TIES: the largest magnitudes;
    DARE: a random subset, rescaled by 1/density). 1 keeps everything (DARE then equals merge_linear)."""
    majority_sign: str = "total"
    """merge_ties: how the sign of each entry is elected: total (sign of the summed values, as in TIES) or
    frequency (the sign most tasks have)."""
    svd_rank: int = 0
    """merge_ties / merge_dare: rank of the merged adapter (their merged ΔW is projected onto it by SVD);
    0 = the sum of the merged adapters' ranks, the rank merge_linear's exact concatenation has."""

    def __post_init__(self):
        c = _Checks("method.merge.")
        c.require(self.weights in ("mean", "sum"), "weights", f"must be mean or sum, got {self.weights!r}")
        c.require(0 < self.density <= 1, "density", f"must be in (0, 1], got {self.density}")
        c.require(self.majority_sign in ("total", "frequency"), "majority_sign", f"must be total or frequency, got {self.majority_sign!r}")
        c.require(self.svd_rank >= 0, "svd_rank", f"must be >= 0 (0 = the sum of the adapters' ranks), got {self.svd_rank}")
        c.raise_if_any()


@dataclass(frozen=True)
class LwfConfig:
    base: str = "lora"
    """What LwF trains across tasks: lora (one adapter carried across tasks) or full (the whole model)."""
    lambda_distill: float = 1.0
    """λ of the distillation term λ T² KL(teacher ‖ student) (Li & Hoiem 2017); 0 turns it off."""
    temperature: float = 2.0
    """Softmax temperature T of the teacher's and the student's target-token distributions."""

    def __post_init__(self):
        c = _Checks("method.lwf.")
        c.require(self.base in _WEIGHTS, "base", f"must be lora or full, got {self.base!r}")
        c.require(self.lambda_distill >= 0, "lambda_distill", f"must be >= 0 (0 turns distillation off), got {self.lambda_distill}")
        c.require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        c.raise_if_any()


@dataclass(frozen=True)
class MethodConfig:
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA settings, used by lora, hybrid and hybrid_shared (and the LoRA baselines)."""
    block: BlockConfig = field(default_factory=BlockConfig)
    """Inserted-block settings, used by full_layer, hybrid and hybrid_shared."""
    joint: JointConfig = field(default_factory=JointConfig)
    """Settings of the joint (multitask) baseline."""
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    """Settings of the replay baseline."""
    ewc: EwcConfig = field(default_factory=EwcConfig)
    """Settings of the EWC baseline."""
    olora: OLoraConfig = field(default_factory=OLoraConfig)
    """Settings of the O-LoRA baseline."""
    merge: MergeConfig = field(default_factory=MergeConfig)
    """Settings of the merging baselines (merge_linear, merge_ties, merge_dare)."""
    lwf: LwfConfig = field(default_factory=LwfConfig)
    """Settings of the LwF (learning without forgetting) baseline."""
    plugins: dict[str, Any] = field(default_factory=dict)
    """The sections of methods registered by plugins (`codecl.registry`), keyed by method name: written
    `method.<name>: {...}` in a config (not under `plugins`), built from the method's `config_class`
    (validated like the sections above) or kept as a plain mapping when it has none."""

    def section(self, name: str):
        """The settings section of method `name`: a built-in one above, a plugin's, or its `config_class`'s
        defaults when the config has no such section (None when it has no `config_class` either)."""
        if name in self.plugins:
            return self.plugins[name]
        if name != "plugins" and name in {f.name for f in dataclasses.fields(self)}:
            return getattr(self, name)
        spec = METHODS.get(name)
        return spec.config_class() if spec.config_class is not None else None


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 5e-4
    """AdamW learning rate for the trainable modules."""
    batch_size: int = 8
    """Training batch size."""
    epochs: int = 2
    """Epochs per task."""
    grad_clip: float = 1.0
    """Gradient-norm clip (0 disables)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    seed: int = 42
    """Seed for data order, dropout and initialisation."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    log_every: int = 10
    """Log the loss to events.jsonl every this many steps."""
    max_consecutive_nonfinite: int = 5
    """Stop with exit 5 after this many non-finite losses in a row (each one skips its step)."""
    checkpoint_every_steps: int = 100
    """Write a mid-stage checkpoint (weights, optimizer, RNG, data position) every this many steps; 0 = never."""
    mixed_precision: str = "no"
    """no (float32) or bf16: forward passes and generation under bfloat16 autocast through Accelerate
    (GPUs with bf16 support; the trainable weights, optimizer and gradients stay float32). fp16 is not
    offered: T5 activations overflow its range. See `codecl.distributed`."""
    base_dropout: bool = True
    """Dropout in the base model's own layers while training (T5's dropout_rate), as Hugging Face
    training does. LoRA's dropout and inserted blocks keep theirs either way. false = a lighter
    regulariser and a faster CPU step (the dropout masks are about a third of it); its effect on
    scores is measured in bench/RESULTS.md."""
    fast_dropout: bool = True
    """On CPU, draw dropout masks with `codecl.model.dropout.FastDropout` (16-bit samples, drop
    probability p to within 2**-17) instead of `nn.Dropout`'s per-element Bernoulli draws, which cost
    more than the matmuls they follow. Same semantics, another random stream; about 1.2x per LoRA
    step here. No effect on GPUs."""
    num_threads: int = 0
    """torch CPU threads for the whole run (0 = torch's default, one per core). On a machine whose
    cores other jobs share, 1 is often several times faster than the default (see bench/RESULTS.md)."""
    gradient_checkpointing: bool = False
    """Recompute the base's layer activations in the backward pass instead of keeping them
    (`gradient_checkpointing_enable`, use_reentrant=False; inserted blocks are checkpointed with the
    layer they follow): less activation memory for large bases, about a third more compute."""

    def __post_init__(self):
        c = _Checks("train.")
        c.require(0 < self.lr < 1, "lr", f"must be in (0, 1), got {self.lr}")
        c.require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        c.require(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        c.require(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        c.require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        c.require(self.log_every >= 1, "log_every", "must be >= 1")
        c.require(self.max_consecutive_nonfinite >= 1, "max_consecutive_nonfinite", "must be >= 1")
        c.require(self.checkpoint_every_steps >= 0, "checkpoint_every_steps", "must be >= 0")
        c.require(self.mixed_precision in ("no", "bf16"), "mixed_precision", f"must be no or bf16, got {self.mixed_precision!r}")
        c.require(self.num_threads >= 0, "num_threads", f"must be >= 0 (0 = torch's default), got {self.num_threads}")
        c.raise_if_any()


@dataclass(frozen=True)
class EvalConfig:
    split: str = "test"
    """Split evaluated after every stage: test (what results report; every shipped preset) or valid
    (for tuning settings: choose them on valid, then report once on test)."""
    max_new_tokens: int = 128
    """Generation budget per example. Below `data.max_target_tokens`, references longer than the
    budget cannot be reproduced (such predictions are marked `truncated`)."""
    num_beams: int = 1
    """1 = greedy decoding (the default); > 1 = beam search."""
    batch_size: int = 32
    """Generation batch size."""
    no_repeat_ngram_size: int = 0
    """0 = plain greedy/beam decoding. N > 0 forbids repeating any N-gram in an output (Hugging Face
    `no_repeat_ngram_size`): tiny, briefly trained models otherwise loop on one token."""
    exec_benchmarks: tuple[str, ...] = ()
    """Execution benchmarks for `pass_at_1` after every stage, one per task: `LANGUAGE=SOURCE`
    (e.g. `python=/data/HumanEval.jsonl.gz`, `javascript=THUDM/humaneval-x:js`), SOURCE a local
    HumanEval / HumanEval-X / MBXP JSONL(.gz) file or a hub name. Tasks without one get null.
    Nothing runs without `allow_code_execution` (see `codecl.execution.inrun`)."""
    allow_code_execution: bool = False
    """Opt-in: run generated code in the sandbox for `exec_benchmarks`. Off: `pass_at_1` is
    reported as skipped, never as 0."""
    exec_timeout_s: float = 10.0
    """Wall-clock limit per executed program (seconds)."""
    exec_max_problems: int | None = None
    """Evaluate only the first N problems of each benchmark (None = all)."""
    retention: tuple[str, ...] = ()
    """General-ability retention (TRACE's question: what does the stream cost the base?): `NAME=SOURCE` items, SOURCE a
    HumanEval / HumanEval-X / MBXP JSONL(.gz) file of Python or JavaScript problems (e.g. HumanEval's
    HumanEval.jsonl.gz). Each is scored by pass@1 in the sandbox on the base and after every stage, with the modules the
    model would use for a task of the benchmark's language (that language's task once trained, else the latest task's),
    into each run's `retention: {NAME: [one value per stage]}`. Needs `allow_code_execution` (otherwise null, never 0)."""
    routing: str = "oracle"
    """`oracle`: every task is evaluated with its own modules (the task id is given, as in the study).
    `router`: also evaluated without the task id: each example goes to the modules of the task the router
    picks from its input alone (`codecl.routing`: nearest task prototype of the frozen base's mean-pooled
    input states, each task's prototype learned from its training inputs when it is trained); results carry
    `routed_scores` and `routing_accuracy` beside the oracle `scores`."""
    metrics: tuple[str, ...] = DEFAULT_METRICS
    """Metrics scored on every task after every stage, by name in `codecl.registry.METRICS` (plugins add
    theirs through the `codecl.metrics` entry points), e.g. `[bleu, exact_match, syntax_pass,
    bleu_sentence_smoothed, codebleu]`. `bleu`, `exact_match` and `syntax_pass` are always computed (added
    in front when missing: results.json requires them, and forgetting is on `bleu`); `loss` always is too,
    and `pass_at_1` comes with `exec_benchmarks`. A metric whose package is missing (`codebleu`:
    `pip install --no-deps codebleu==0.7.0`) stops the run before anything is computed."""

    def __post_init__(self):
        c = _Checks("eval.")
        c.require(self.split in ("valid", "test"), "split", f"must be valid or test, got {self.split!r}")
        c.require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        c.require(self.num_beams >= 1, "num_beams", "must be >= 1")
        c.require(self.batch_size >= 1, "batch_size", "must be >= 1")
        c.require(self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size", "must be >= 0 (0 = off)")
        seen = set()
        for item in self.exec_benchmarks:
            language, sep, source = item.partition("=")
            language = language.strip()
            c.require(bool(sep) and bool(language) and bool(source.strip()), "exec_benchmarks",
                      f"items must be LANGUAGE=SOURCE (e.g. python=HumanEval.jsonl.gz), got {item!r}")
            c.require(not sep or language in EXEC_LANGUAGES, "exec_benchmarks",
                      f"language {language!r} cannot be executed; supported: {', '.join(EXEC_LANGUAGES)}")
            c.require(language not in seen, "exec_benchmarks", f"names {language!r} twice")
            seen.add(language)
        c.require(self.routing in ("oracle", "router"), "routing", f"must be oracle or router, got {self.routing!r}")
        names = set()
        for item in self.retention:
            name, sep, source = item.partition("=")
            c.require(bool(sep) and bool(name.strip()) and bool(source.strip()), "retention",
                      f"items must be NAME=SOURCE (e.g. humaneval=HumanEval.jsonl.gz), got {item!r}")
            c.require(name.strip() not in names, "retention", f"names {name.strip()!r} twice")
            names.add(name.strip())
        c.require(self.exec_timeout_s > 0, "exec_timeout_s", f"must be > 0, got {self.exec_timeout_s}")
        c.require(self.exec_max_problems is None or self.exec_max_problems > 0, "exec_max_problems",
                  f"must be positive or null, got {self.exec_max_problems}")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            broken = METRICS.broken()
            c.require(False, "metrics", f"has unknown metric(s) {unknown}; available: "
                      f"{', '.join(s.name for s in METRICS if s.selectable)}" + "".join(_missing_plugin("metric", m) for m in unknown)
                      + "".join(f"; plugin {m} is broken: {why}" for m, why in broken.items() if m not in unknown))
        elsewhere = [m for m in self.metrics if m in METRICS and not METRICS.get(m).selectable]
        c.require(not elsewhere, "metrics", f"cannot select {elsewhere}: computed by the run itself (loss always; pass_at_1 with "
                  f"eval.exec_benchmarks and eval.allow_code_execution)")
        c.require(len(set(self.metrics)) == len(self.metrics), "metrics", "must not repeat a metric")
        if not unknown and not elsewhere:
            clash = per_example_fields_clash(dict.fromkeys((*ALWAYS_COMPUTED, *self.metrics)))
            c.require(not clash, "metrics", "; ".join(clash))
        c.raise_if_any()
        object.__setattr__(self, "metrics", tuple(dict.fromkeys((*ALWAYS_COMPUTED, *self.metrics))))  # the resolved list


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None
    """A running Ray cluster (`ray://host:10001` or `host:6379`, as `ray.init(address=...)`); None = start a local Ray
    for the run. Trials write into the run folder, so on a cluster it must be on a filesystem every node mounts."""
    trial_gpus: float = 0.0
    """GPUs per trial; fractions pack several small trials on one GPU (0.25 = four)."""
    trial_cpus: float = 1.0
    """CPUs per trial (Ray schedules as many trials at once as the CPUs allow)."""
    max_retries: int = 1
    """Times a failed trial is started again (a killed worker, or an error other than codecl's own one-line
    errors, which would fail the same way again); it resumes from its finished stages and checkpoints."""

    def __post_init__(self):
        c = _Checks("ray.")
        c.require(self.trial_gpus >= 0, "trial_gpus", f"must be >= 0, got {self.trial_gpus}")
        c.require(self.trial_cpus > 0, "trial_cpus", f"must be > 0, got {self.trial_cpus}")
        c.require(self.max_retries >= 0, "max_retries", f"must be >= 0, got {self.max_retries}")
        c.require(self.address is None or bool(self.address.strip()), "address", "must be a Ray address or null")
        c.raise_if_any()


TRACKERS = ("tensorboard", "mlflow", "wandb", "trackio")
"""Experiment trackers `track.report_to` can name (Accelerate's tracking API, `codecl.tracking`)."""


@dataclass(frozen=True)
class TrackConfig:
    report_to: tuple[str, ...] = ()
    """Experiment trackers to log to, any of tensorboard, mlflow, wandb, trackio (`codecl.tracking`): the
    resolved config, the training loss, every stage's score matrix row, the final summary, and report.md /
    results.json as artifacts where the tracker keeps artifacts. Empty (the default): only events.jsonl."""
    project: str = "codecl"
    """The trackers' project (MLflow experiment, W&B / Trackio project)."""
    run_name: str | None = None
    """The run's name in the trackers; None = the output folder's name. Ray workers log their own runs,
    named `<run_name>/<method>/seed-<N>[-order-<k>]` (the run's folder)."""
    logging_dir: str | None = None
    """Where local trackers write (TensorBoard event files under `<logging_dir>/<run_name>`, MLflow's store
    in `<logging_dir>/mlflow.db` and `<logging_dir>/mlartifacts` unless MLFLOW_TRACKING_URI is set); None = `<output_dir>/trackers`."""

    def __post_init__(self):
        c = _Checks("track.")
        unknown = [t for t in self.report_to if t not in TRACKERS]
        c.require(not unknown, "report_to", f"has unknown tracker(s) {unknown}; available: {', '.join(TRACKERS)}")
        c.require(len(set(self.report_to)) == len(self.report_to), "report_to", "must not repeat a tracker")
        c.require(bool(self.project.strip()), "project", "must be a non-empty name")
        c.require(self.run_name is None or bool(self.run_name.strip()), "run_name", "must be a non-empty name or null")
        c.require(self.logging_dir is None or bool(self.logging_dir.strip()), "logging_dir", "must be a folder or null")
        c.raise_if_any()


@dataclass(frozen=True)
class RunConfig:
    tasks: tuple[str, ...] = ("python", "javascript")
    """Task (language) sequence, trained in this order."""
    methods: tuple[str, ...] = METHOD_NAMES
    """Methods to run, each over the whole task sequence."""
    seeds: tuple[int, ...] = (42,)
    """One run per seed (train.seed is replaced by each)."""
    output_dir: str = "runs/quickstart"
    """Run folder."""
    data: DataConfig = field(default_factory=DataConfig)
    """Data settings."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Base-model settings."""
    method: MethodConfig = field(default_factory=MethodConfig)
    """Per-method module settings."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training settings."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation settings."""
    track: TrackConfig = field(default_factory=TrackConfig)
    """Experiment trackers (`codecl.tracking`)."""
    orders: int = 1
    """Task orders per method × seed: the given `tasks` order first, then seeded permutations (`codecl.orders`);
    each run records its `order`. Ignored when `task_orders` is given."""
    task_orders: tuple[tuple[str, ...], ...] = ()
    """Explicit task orders (each a permutation of `tasks`), e.g. `[[python, javascript], [javascript, python]]`."""
    launcher: str = "local"
    """`local`: the grid's runs one after another in this process; `ray`: every (method, seed, order) run as a
    Ray task, on a local Ray started for the run or the cluster at `ray.address` (`codecl.launchers`)."""
    ray: RayConfig = field(default_factory=lambda: RayConfig())
    """Ray launcher settings."""
    sweep: tuple[str, ...] = ()
    """`KEY=V1,V2,...` items (dotted config keys, e.g. `method.lora.rank=4,8,16`): `codecl run` then runs
    one complete run per combination of values, each in `output_dir/KEY=V,...`, and writes
    `output_dir/sweep.md` (`codecl.sweep`). Empty: a single run."""

    def __post_init__(self):
        c = _Checks("")
        for item in self.sweep:
            key, sep, values = item.partition("=")
            c.require(bool(sep) and bool(key.strip()) and bool(values.strip(",").strip()), "sweep",
                      f"items must be KEY=V1,V2,... (e.g. method.lora.rank=4,8,16), got {item!r}")
            c.require(key.strip() not in ("sweep", "output_dir"), "sweep", f"cannot sweep {key.strip()!r}")
        c.require(len(self.tasks) >= 1, "tasks", "must name at least one task")
        unknown = [t for t in self.tasks if t not in _languages() and t not in self.data.tasks]
        c.require(not unknown, "tasks", f"has unknown task(s) {unknown}; known: the languages {', '.join(_languages())}"
                  f"{', the tasks of data.tasks ' + ', '.join(self.data.tasks) if self.data.tasks else ''} — define your own with "
                  f"--tasks NAME=PATH or data.tasks")
        c.require(len(set(self.tasks)) == len(self.tasks), "tasks", "must not repeat a task")
        c.require(self.orders >= 1, "orders", f"must be >= 1, got {self.orders}")
        if not self.task_orders:
            c.require(self.orders <= math.factorial(len(self.tasks)), "orders",
                      f"asks for {self.orders} orders but {len(self.tasks)} tasks have only {math.factorial(len(self.tasks))}")
        for i, order in enumerate(self.task_orders):
            c.require(sorted(order) == sorted(self.tasks), f"task_orders[{i}]", f"must be a permutation of tasks {list(self.tasks)}, got {list(order)}")
        c.require(len(set(self.task_orders)) == len(self.task_orders), "task_orders", "must not repeat an order")
        c.require(self.launcher in ("local", "ray"), "launcher", f"must be local or ray, got {self.launcher!r}")
        unknown = [m for m in self.methods if m not in METHODS]
        broken = METHODS.broken()
        c.require(not unknown, "methods", f"has unknown method(s) {unknown}; available: {', '.join(METHODS.names())}"
                  + "".join(_missing_plugin("method", m) for m in unknown))
        c.require(len(set(self.methods)) == len(self.methods), "methods", "must not repeat a method")
        c.require(len(self.methods) >= 1, "methods", "must name at least one method")
        c.require(len(self.seeds) >= 1, "seeds", "must name at least one seed")
        c.raise_if_any()
        for name in self.methods:  # a plugin method's settings are written to config.yaml even when all are defaults:
            spec = METHODS.get(name)  # resuming after the plugin changed its defaults is then refused, not silent
            if name not in BUILTIN_METHODS and name not in self.method.plugins and spec.config_class is not None:
                self.method.plugins[name] = spec.config_class()


# ---------------------------------------------------------------- building from dicts


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Coerce a YAML/CLI value into the annotated type, or raise ConfigError naming `key`."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing) | globals())  # dataclass string annotations (PEP 563)
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        for alternative in non_none[:-1]:  # e.g. `int | str`: the first type the value converts to
            try:
                return _convert(value, alternative, key)
            except ConfigError:
                pass
        return _convert(value, non_none[-1], key)
    if isinstance(value, _PluginSections):
        return dict(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of name: settings, got {type(value).__name__}")
        _, item_type = typing.get_args(annotation)
        errors, converted = [], {}
        for name, item in value.items():
            try:
                converted[str(name)] = _convert(item, item_type, f"{key}.{name}")
            except ConfigError as exc:
                errors.append(str(exc))
        if errors:
            raise ConfigError("; ".join(errors))
        return converted
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__}")
        item_type = typing.get_args(annotation)[0]
        return tuple(_convert(v, item_type, f"{key}[{i}]" if typing.get_origin(item_type) is tuple else key) for i, v in enumerate(value))
    if annotation is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            converted = annotation(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be {annotation.__name__}, got {value!r}") from None
        if annotation is int and isinstance(value, float) and value != converted:
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return converted
    if annotation is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key} must be a string, got {type(value).__name__}")
        return str(value)
    return value


def _build(cls: type, data: Any, prefix: str = ""):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if cls is MethodConfig:
        data = _plugin_sections(data, prefix)
    unknown = sorted(set(data) - set(fields))
    errors = [f"{prefix}{k} is not a known key (known: {', '.join(fields)})" + (_missing_plugin("method", k) if cls is MethodConfig else "")
              for k in unknown]
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        if name not in fields:
            continue
        try:
            kwargs[name] = _convert(value, hints[name], prefix + name)
        except ConfigError as exc:
            errors.append(str(exc))
    if errors:
        raise ConfigError("; ".join(errors))
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # a plugin's config class validating with plain exceptions
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {exc}") from exc


def _missing_plugin(kind: str, name: str) -> str:
    """The end of the message for a name nothing registers: the plugin that failed to load it, or where to look
    (a run trained with a plugin's method or metric is read back only while that plugin is installed)."""
    registry = {"method": METHODS, "metric": METRICS}[kind]
    broken = registry.broken()
    if name in broken:
        return f"; {name}: {broken[name]}"
    return f"; if {name!r} is a plugin's {kind}, that plugin is not installed (`codecl list {kind}s` shows what is loaded)"


def _plugin_sections(data: dict, prefix: str) -> dict:
    """`method.<name>` sections of plugin methods moved under `plugins`, each built from the method's
    `config_class` when it has one (a `plugins` key written by `to_dict` is read back the same way)."""
    builtin = {f.name for f in dataclasses.fields(MethodConfig)}
    given = data.get("plugins")
    if given is not None and not isinstance(given, dict):
        raise ConfigError(f"{prefix}plugins must be a mapping of plugin method: settings, got {type(given).__name__} "
                          f"(a plugin method's settings are written {prefix}<name>)")
    sections = dict(given or {})
    data = {k: v for k, v in data.items() if k != "plugins"}
    for key in [k for k in data if k not in builtin and k in METHODS]:
        sections[key] = data.pop(key)
    plugins, errors = {}, []
    for name, value in sections.items():
        try:
            spec = METHODS.get(name)
        except ConfigError as exc:
            errors.append(f"{prefix}{name}: {exc}")
            continue
        if name in builtin or name in BUILTIN_METHODS:
            errors.append(f"{prefix}{'plugins.' if name in (given or {}) else ''}{name}: {name!r} is codecl's own method, not a plugin's"
                          + (f"; its settings are {prefix}{name}" if name in builtin else "; it has no settings section"))
            continue
        if spec.config_class is not None:
            try:
                plugins[name] = _build(spec.config_class, value if value is not None else {}, f"{prefix}{name}.")
            except ConfigError as exc:
                errors.append(str(exc))
        elif value is not None and not isinstance(value, dict):
            errors.append(f"{prefix}{name} must be a mapping of settings, got {type(value).__name__}")
        else:
            plugins[name] = dict(value or {})
    if errors:
        raise ConfigError("; ".join(errors))
    if plugins:
        data["plugins"] = _PluginSections(plugins)
    return data


class _PluginSections(dict):
    """Plugin sections already built (so `_convert` keeps them as they are)."""


def to_dict(cfg) -> dict:
    """Plain, YAML/JSON-ready dict (tuples become lists); plugin method sections as `method.<name>`."""

    def _plain(v):
        if isinstance(v, tuple):
            return [_plain(x) for x in v]
        if isinstance(v, dict):
            return {k: _plain(x) for k, x in v.items()}
        return v

    plain = _plain(dataclasses.asdict(cfg))
    for section in (plain, plain.get("method")):
        if isinstance(section, dict) and isinstance(section.get("plugins"), dict) and "lora" in section:
            section.update(section.pop("plugins"))
    return plain


def from_dict(data: dict) -> RunConfig:
    return _build(RunConfig, data)


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("codecl.presets").iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, origin: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: top level must be a mapping")
    return data


def load_preset_dict(name: str) -> dict:
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    text = resources.files("codecl.presets").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return _read_yaml(text, f"preset {name}")


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. train.epochs=1)")
    key, raw = item.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def load_config(preset: str | None = None, config_file: str | None = None, overrides: list[str] = (), **top_level) -> RunConfig:
    """Preset or file, then `--set` overrides, then explicit top-level values (CLI flags)."""
    if preset and config_file:
        raise ConfigError("give either --preset or --config, not both")
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        data = _read_yaml(path.read_text(encoding="utf-8"), str(path))
        base = data.pop("preset", None)
        if base:
            merged = load_preset_dict(base)
            _deep_update(merged, data)
            data = merged
    else:
        data = load_preset_dict(preset or "quickstart")
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
    for key, value in top_level.items():
        if value is not None:
            data[key] = value
    if isinstance(data.get("tasks"), (list, tuple)):
        data["tasks"] = _user_task_entries(data, list(data["tasks"]))
    return from_dict(data)


def _user_task_entries(data: dict, entries: list) -> list:
    """`NAME=PATH` entries of `tasks` (SPEC `--tasks`) become `data.tasks.NAME.path = PATH`; the names stay in `tasks`."""
    names = []
    for entry in entries:
        if isinstance(entry, str) and "=" in entry:
            name, _, path = (part.strip() for part in entry.partition("="))
            if not name or not path:
                raise ConfigError(f"tasks: {entry!r} must be NAME=PATH (a folder with train/valid/test files, or one data file)")
            section = data.setdefault("data", {})
            if not isinstance(section, dict):
                raise ConfigError("data must be a mapping")
            defined = section.setdefault("tasks", {})
            if not isinstance(defined, dict):
                raise ConfigError("data.tasks must be a mapping of name: settings")
            defined[name] = {**(defined.get(name) or {}), "path": str(Path(path).expanduser().absolute())}
            names.append(name)
        else:
            defined = (data.get("data") or {}).get("tasks") if isinstance(data.get("data"), dict) else None
            after_path = bool(names) and isinstance(entries[len(names) - 1], str) and "=" in entries[len(names) - 1]
            if after_path and isinstance(entry, str) and entry not in _languages() and entry not in (defined if isinstance(defined, dict) else {}):
                raise ConfigError(f"tasks: {entry!r} is no task — the comma before it split the entry {entries[len(names) - 1]!r}; a path "
                                  f"holding a comma cannot go in --tasks: rename the folder, or define the task in a config file "
                                  f"(data.tasks.NAME.path) and name it in --tasks")
            names.append(entry)
    return names


def _deep_update(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def replace(cfg, **changes):
    return dataclasses.replace(cfg, **changes)
