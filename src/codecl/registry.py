"""Registries: the one place each method, metric and language is named, open to plugins.

A `Registry` maps a name to a spec (`MethodSpec` and `MetricSpec` here,
`codecl.languages.LanguageSpec`). Config validation, CLI help, accounting, the run loop and the
report read the registries; nothing else lists names.

Third-party packages add entries through Python entry points, with no change inside codecl:

    # the plugin's pyproject.toml
    [project.entry-points."codecl.methods"]
    lora_qv = "codecl_plugin:METHOD"        # a MethodSpec, a list of them, or a function returning either
    [project.entry-points."codecl.metrics"]
    token_f1 = "codecl_plugin:METRIC"       # a MetricSpec (or a list / a function returning one)

Entry points are read once, the first time a registry is asked for its names or for a name it does
not hold. A plugin that fails to import does not break codecl: asking for one of its names raises a
`ConfigError` that names the entry point, its distribution and the error. A plugin may not take the
name of a built-in entry (that is an error too, named the same way).

A method's own settings live in the config under `method.<name>` (`MethodSpec.config_class`, a
dataclass, validated like codecl's own sections; a plugin without one gets the section as a plain dict).
"""
from __future__ import annotations

import contextlib
import importlib
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

from codecl.errors import ConfigError

T = TypeVar("T")

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
"""What a registered name looks like: it is a config key (`method.<name>.rank`), an item of a comma-separated
list (`--methods`, `eval.metrics`) and a folder name (`<method>/seed-<N>`)."""


def resolve(reference: Any) -> Any:
    """A `"module:attribute"` reference imported (how built-in specs name code of upper layers without
    importing it); anything else is returned as it is."""
    if isinstance(reference, str) and ":" in reference:
        module, _, attr = reference.partition(":")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    return reference


class Registry(Generic[T]):
    """A name -> spec map whose miss lists what exists (lm-evaluation-harness style), extended by the
    entry points of `group`."""

    def __init__(self, kind: str, spec_type: type, group: str | None = None, reserved: dict[str, str] | None = None):
        self.kind, self.spec_type, self.group = kind, spec_type, group
        self.reserved = dict(reserved or {})
        """Names no entry may take -> why (a method named like a `method.<name>` section of codecl's own)."""
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._broken: dict[str, str] = {}
        self._plugins_loaded = group is None

    # ------------------------------------------------------------------ registering
    def register(self, spec: T, origin: str = "codecl") -> T:
        if not isinstance(spec, self.spec_type):
            raise TypeError(f"a {self.kind} registry holds {self.spec_type.__name__} objects, got {type(spec).__name__}")
        name = spec.name
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ConfigError(f"{self.kind} name {name!r} (registered by {origin}) is not a valid name: letters, digits, "
                              f"'_' and '-', starting with a letter or '_' (names are config keys, list items and folder names)")
        if name in self.reserved:
            raise ConfigError(f"{self.kind} name {name!r} (registered by {origin}) is reserved: {self.reserved[name]}")
        if name in self._items:
            raise ConfigError(f"{self.kind} {name!r} registered twice: by {self._origin[name]} and by {origin}")
        self._items[name] = spec
        self._origin[name] = origin
        return spec

    def unregister(self, name: str) -> None:
        """Remove a registered entry (tests; a plugin replacing nothing)."""
        self._items.pop(name, None)
        self._origin.pop(name, None)

    def load_plugins(self) -> None:
        """Register every entry point of the group (once)."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from importlib.metadata import entry_points

        plugin_names: set = set()
        for ep in entry_points(group=self.group):
            found = getattr(ep, "dist", None)  # the installed package: named with its version (results.json provenance)
            dist = f"{found.name} {found.version}" if getattr(found, "name", None) else "an unknown distribution"
            where = f"entry point {ep.name} = {ep.value} (group {self.group}, {dist})"
            try:
                with contextlib.redirect_stdout(sys.stderr):  # a plugin that prints does not spoil stdout (`--json`)
                    obj = ep.load()
                    if callable(obj) and not isinstance(obj, self.spec_type) and not isinstance(obj, type):
                        obj = obj()
                specs = list(obj) if isinstance(obj, (list, tuple)) else [obj]
                for spec in specs:
                    name = getattr(spec, "name", None)
                    if name in self._broken and name in plugin_names:  # a third claim of a name two plugins took
                        continue
                    if name in self._items and name in plugin_names:  # two plugins, one name: neither is used
                        self._broken[name] = f"claimed by two plugins: {self._origin[name]} and {where}; uninstall one"
                        self.unregister(name)
                        continue
                    self.register(spec, origin=where)
                    plugin_names.add(name)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - a broken plugin is reported when its name is asked for
                self._broken[ep.name] = f"{where} failed to load: {type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ reading
    def get(self, name: str) -> T:
        if name not in self._items:
            self.load_plugins()
        if name not in self._items:
            if name in self._broken:
                raise ConfigError(f"{self.kind} {name!r}: {self._broken[name]}")
            raise ConfigError(f"Unknown {self.kind} {name!r}. Available: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        self.load_plugins()
        return list(self._items)

    def origin(self, name: str) -> str:
        self.get(name)
        return self._origin[name]

    def broken(self) -> dict[str, str]:
        """Entry points that failed to load: name -> why."""
        self.load_plugins()
        return dict(self._broken)

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            self.load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        return iter([self._items[n] for n in self.names()])


# ====================================================================== methods
# The built-in methods:
#
# The method registry: each continual-learning method is a small spec of which modules it adds.
#
# | method        | LoRA per task | inserted block          |
# |---------------|---------------|-------------------------|
# | lora          | yes           | none                    |
# | full_layer    | no            | one per task            |
# | hybrid        | yes           | one per task            |
# | hybrid_shared | yes           | one, shared by all tasks and trained again with each |
#
# Baselines run in the same harness (same data, evaluation and report):
#
# | method        | what is trained                               | what keeps the past                  |
# |---------------|-----------------------------------------------|--------------------------------------|
# | sequential_ft | the whole model, task after task              | nothing (the forgetting reference)   |
# | joint         | one LoRA adapter (or the whole model), once, on all tasks' data | nothing to keep: the multitask upper bound |
# | replay        | one LoRA adapter (or the whole model) carried across tasks | a small buffer of earlier tasks' examples mixed in |
# | ewc           | one LoRA adapter (or the whole model) carried across tasks | λ/2 Σ F (θ − θ*)² (Kirkpatrick et al. 2017) |
# | olora         | a new LoRA adapter per task; earlier ones frozen and summed | ‖A_s A_tᵀ‖² orthogonality (O-LoRA, arXiv 2310.14152) |
# | merge_linear  | a new LoRA adapter per task (as `lora`)       | all adapters merged after each stage: Σ w_t ΔW_t (task arithmetic; PEFT `cat`) |
# | merge_ties    | a new LoRA adapter per task (as `lora`)       | TIES merge (trim, elect sign, disjoint mean; PEFT `ties_svd`) |
# | merge_dare    | a new LoRA adapter per task (as `lora`)       | DARE merge (drop and rescale, then sum; PEFT `dare_linear_svd`) |
# | lwf           | one LoRA adapter (or the whole model) carried across tasks | λ T² KL(previous model ‖ model) on the new task's inputs (Li & Hoiem 2017) |
#
# `kind` picks the model class that implements a spec (`codecl.methods.build.MODEL_KINDS`):
# `modules` (`ContinualModel`), `olora` (`OLoraModel`), `shared` (`SharedModel`, one set of
# weights carried across tasks, set up by the spec's `plan`), `merge` (`MergeModel`,
# `codecl.methods.merging`) or `lwf` (`LwfModel`, a `SharedModel` with distillation, `codecl.methods.lwf`).
# The merging methods evaluate every task with the merged adapter (no task id) and declare no
# `first_stage_as`: their first stage is scored with the merged (rescaled) adapter, not bit-identical to `lora`.

JOINT_STAGE = "joint"
"""The one training stage of the joint baseline (one model trained once on every task's data, the
multitask upper bound). It has no task sequence: its run has the stages `["base", "joint"]` and two
score rows (the base model, then the joint model on every task); its per-stage fields are keyed
`joint`; it is complete with those two stages; its forgetting is `{}` and bwt / fwt `null` (no
earlier stage to compare with); `final_average` is comparable with every other method's
(`codecl.results` reads results.json by it)."""


@dataclass(frozen=True)
class SharedPlan:
    """What a shared-weights baseline does (read from the method config when the model is built)."""

    weights: str
    """`lora` (one adapter carried across tasks) or `full` (the whole model is trained)."""
    joint: bool = False
    """True: one stage, named `joint` (`JOINT_STAGE`), on the union of every task's training data."""
    replay_per_task: int = 0
    """Examples of each earlier task mixed into each later stage's training data."""
    ewc_lambda: float = 0.0
    """EWC penalty strength λ (0 = no penalty)."""
    fisher_batches: int = 0
    """Batches of a finished task's training data that estimate its diagonal Fisher."""


MODEL_KINDS = {"modules": "codecl.methods.continual:ContinualModel", "olora": "codecl.methods.olora:OLoraModel",
               "shared": "codecl.methods.shared:SharedModel", "merge": "codecl.methods.merging:MergeModel",
               "lwf": "codecl.methods.lwf:LwfModel"}
"""A built-in spec's `kind` -> the class that implements it (resolved when a model is built)."""


@dataclass(frozen=True)
class MethodSpec:
    """One continual-learning method (PEFT's `register_peft_method` in spirit).

    A plugin gives `model_class` (a class with the `ContinualLearner` interface of
    `codecl.methods.build`, usually a subclass of `codecl.methods.continual.ContinualModel`) and,
    optionally, `config_class` for its `method.<name>` section; built-in methods name a `kind`."""

    name: str
    lora: bool
    """Adds a PEFT LoRA adapter per task."""
    block: str | None
    """None, `per_task` or `shared`."""
    description: str
    """One line: what the method trains and keeps (CLI help, report, `codecl methods`)."""
    kind: str = "modules"
    """Model class of a built-in method: `modules` (ContinualModel), `olora` (OLoraModel), `shared`
    (SharedModel), `merge` (MergeModel) or `lwf` (LwfModel); see `MODEL_KINDS`. Ignored when
    `model_class` is given."""
    plan: Callable | None = None
    """For `shared`: method config -> SharedPlan."""
    first_stage_as: str | None = None
    """A method whose first stage trains exactly the same modules, from the same initialisation,
    on the same data (hybrid_shared's first stage is hybrid's). A run holding both reuses that
    stage instead of training it twice (`codecl.experiment`); the outcome is bit-identical."""
    model_class: Any = None
    """The learner class (or a `"module:Class"` reference); None: `MODEL_KINDS[kind]`."""
    config_class: Any = None
    """A frozen dataclass for the method's `method.<name>` config section (defaults, validation in
    `__post_init__`, documented fields); None: the section, if any, stays a plain dict."""
    study: bool = False
    """One of the design study's four methods (the default `methods`, and the report's claims)."""
    routes_by_task: bool | None = None
    """Evaluation picks the modules of the task (task identity known); None: true for per-task
    module classes (`ContinualModel`), false for one set of weights or a merged adapter."""

    def __post_init__(self):
        if self.block not in (None, "per_task", "shared"):
            raise ValueError(f"MethodSpec {self.name!r}: block must be None, 'per_task' or 'shared', got {self.block!r}")
        if self.model_class is None and self.kind not in MODEL_KINDS:
            raise ValueError(f"MethodSpec {self.name!r}: kind must be one of {', '.join(MODEL_KINDS)} (or give model_class), "
                             f"got {self.kind!r}")

    def model_type(self) -> type:
        return resolve(self.model_class if self.model_class is not None else MODEL_KINDS[self.kind])


RESERVED_METHOD_NAMES = {name: f"codecl's own config section method.{name} has that name" for name in ("block", "merge", "plugins")}
"""Sections of `codecl.config.MethodConfig` that are not a built-in method's name: a plugin method taking one would
find codecl's section where its own `method.<name>` belongs (the built-in names are taken anyway)."""
METHODS: Registry[MethodSpec] = Registry("method", MethodSpec, group="codecl.methods", reserved=RESERVED_METHOD_NAMES)
for _spec in (
    MethodSpec("lora", True, None, "a new LoRA adapter per task", study=True),
    MethodSpec("full_layer", False, "per_task", "a new inserted transformer block per task", study=True),
    MethodSpec("hybrid", True, "per_task", "per-task LoRA + per-task inserted block", study=True),
    MethodSpec("hybrid_shared", True, "shared", "per-task LoRA + one inserted block shared by all tasks",
               first_stage_as="hybrid", study=True),
    # baselines
    MethodSpec("sequential_ft", False, None, "full fine-tuning of the whole model, task after task",
               kind="shared", plan=lambda c: SharedPlan("full")),
    MethodSpec("joint", False, None, "one model trained once on all tasks' data (multitask upper bound)",
               kind="shared", plan=lambda c: SharedPlan(c.joint.base, joint=True)),
    MethodSpec("replay", False, None, "one adapter (or the whole model) trained on each task plus a replay buffer",
               kind="shared", plan=lambda c: SharedPlan(c.replay.base, replay_per_task=c.replay.buffer_per_task)),
    MethodSpec("ewc", False, None, "one adapter (or the whole model) with elastic weight consolidation",
               kind="shared", plan=lambda c: SharedPlan(c.ewc.base, ewc_lambda=c.ewc.lambda_penalty, fisher_batches=c.ewc.fisher_batches)),
    MethodSpec("olora", True, None, "per-task LoRA, earlier adapters frozen and summed, orthogonal A matrices", kind="olora"),
    MethodSpec("merge_linear", True, None, "per-task LoRA adapters merged after each stage by task arithmetic", kind="merge"),
    MethodSpec("merge_ties", True, None, "per-task LoRA adapters merged after each stage by TIES", kind="merge"),
    MethodSpec("merge_dare", True, None, "per-task LoRA adapters merged after each stage by DARE", kind="merge"),
    MethodSpec("lwf", False, None, "one adapter (or the whole model) with learning-without-forgetting distillation",
               kind="lwf", plan=lambda c: SharedPlan(c.lwf.base)),
):
    METHODS.register(_spec)
del _spec


BUILTIN_METHODS: tuple[str, ...] = tuple(METHODS._items)
"""codecl's own methods (registered above); every other one is a plugin's or the caller's (`METHODS.register`)."""
STUDY_METHODS: tuple[str, ...] = tuple(name for name, s in METHODS._items.items() if s.study)
"""The design study's four methods (the default `methods`; plugins are never among them)."""


def method_help() -> str:
    """`name: description` of every registered method (CLI help)."""
    return "; ".join(f"{s.name} ({s.description})" for s in METHODS)


# ====================================================================== metrics
# The metrics a run scores generated outputs by (`eval.metrics`; SPEC "Metric definitions"). Built-in
# compute functions live in `codecl.evaluation.metrics` and are named by "module:function" strings, so
# this foundation module imports nothing above it. `loss` and `pass_at_1` are registered for their
# direction and description (the report reads them) but are computed by the run itself, not selected.


@dataclass(frozen=True)
class MetricSpec:
    """One evaluation metric (`eval.metrics` selects them; plugins add them through the entry-point group
    `codecl.metrics`).

    `compute(hyps: list[str], refs: list[str], language: str | None) -> tuple[float | None, list | None]`
    gives the corpus score (0–1, SPEC "Scores are on a 0–1 scale"; None: undefined for this task) and,
    optionally, one value per hypothesis (None: none). `language` is the task's output language, None
    when the outputs are text (a code → description task). A bare float return is read as `(score, None)`."""

    name: str
    compute: Any
    """The function above, or a `"module:function"` reference (`resolve`); None: computed by the run
    itself (`loss`, `pass_at_1`) and not selectable in `eval.metrics`."""
    description: str
    """One line: what it measures (report, CLI help)."""
    higher_is_better: bool = True
    """Direction: the report's rankings and comparisons read it."""
    needs_code: bool = False
    """Defined on code only: None (and per-example None) on a task whose outputs are text (`language` None),
    without calling `compute`."""
    needs_execution: bool = False
    """Runs generated code in the sandbox (`pass_at_1`)."""
    per_example_field: str | None = None
    """The predictions-line field its per-example values fill (`exact_match`, `syntax_ok`, `bleu_sentence`);
    None: the metric's name, when `compute` gives per-example values."""
    requires: str | None = None
    """An importable package the metric needs (checked before a run starts: a clear ConfigError)."""
    install: str | None = None
    """How to install `requires` (default `pip install <requires>`), quoted by that error."""

    @property
    def selectable(self) -> bool:
        """True when `eval.metrics` may name it (computed from hypotheses and references)."""
        return self.compute is not None and not self.needs_execution

    def function(self) -> Callable:
        return resolve(self.compute)

    def check_installed(self) -> None:
        """ConfigError when the package the metric needs is not installed."""
        import importlib.util

        if self.requires and importlib.util.find_spec(self.requires) is None:
            raise ConfigError(f"metric {self.name!r} needs the {self.requires!r} package, which is not installed: "
                              f"{self.install or 'pip install ' + self.requires}")


_METRIC_FUNCTIONS = "codecl.evaluation.metrics"
METRICS: Registry[MetricSpec] = Registry("metric", MetricSpec, group="codecl.metrics")
for _metric in (
    MetricSpec("bleu", f"{_METRIC_FUNCTIONS}:bleu_metric",
               "corpus BLEU-4 without smoothing (sacrebleu on codecl's code tokens); the headline metric and forgetting's"),
    MetricSpec("exact_match", f"{_METRIC_FUNCTIONS}:exact_match_metric",
               "share of outputs equal to the reference after whitespace normalisation", per_example_field="exact_match"),
    MetricSpec("syntax_pass", f"{_METRIC_FUNCTIONS}:syntax_pass_metric",
               "share of outputs that parse as a complete program unit of the task's language", needs_code=True,
               per_example_field="syntax_ok"),
    MetricSpec("bleu_sentence_smoothed", f"{_METRIC_FUNCTIONS}:sentence_bleu_metric",
               "sentence-averaged smoothed BLEU-4 as CodeXGLUE computes it (comparison with published numbers)",
               per_example_field="bleu_sentence"),
    MetricSpec("codebleu", f"{_METRIC_FUNCTIONS}:codebleu_metric",
               "CodeBLEU (Ren et al. 2020): n-gram, weighted n-gram, syntax and data-flow match, 0.25 each", needs_code=True,
               requires="codebleu",
               install="pip install --no-deps codebleu==0.7.0 (--no-deps: codebleu 0.7.0 pins tree-sitter<0.23, and a plain "
                       "install would downgrade the tree-sitter 0.26 codecl's grammars need; codebleu works with 0.26)"),
    MetricSpec("loss", None, "held-out teacher-forced cross-entropy, nats per reference token (always computed)",
               higher_is_better=False),
    MetricSpec("pass_at_1", None, "share of benchmark problems whose generated function passes the unit tests "
               "(eval.exec_benchmarks, in the sandbox)", needs_code=True, needs_execution=True),
):
    METRICS.register(_metric)
del _metric

PREDICTION_FIELDS: tuple[str, ...] = ("id", "source", "reference", "prediction", "truncated", "loss", "passed",
                                      "routed_to", "routed_prediction", "routed_loss")
"""The fields of a predictions line (SPEC) that no metric's per-example values may fill."""


def per_example_fields_clash(names) -> list[str]:
    """Why the per-example fields of metrics `names` cannot share one predictions line (empty: they can): a field
    that is one of `PREDICTION_FIELDS` or that two metrics fill. A metric without `per_example_field` is counted
    under its own name (the field its per-example values would fill)."""
    problems, owner = [], {}
    for name in names:
        spec = METRICS.get(name)
        field = spec.per_example_field or name
        if field in PREDICTION_FIELDS:
            problems.append(f"metric {name!r} would write its per-example values over the predictions field {field!r}")
        elif field in owner:
            problems.append(f"metrics {owner[field]!r} and {name!r} both fill the predictions field {field!r}")
        owner.setdefault(field, name)
    return problems


DEFAULT_METRICS: tuple[str, ...] = ("bleu", "exact_match", "syntax_pass", "bleu_sentence_smoothed")
"""The default `eval.metrics`: SPEC's metrics, exactly what runs scored before metrics were selectable."""
ALWAYS_COMPUTED: tuple[str, ...] = ("bleu", "exact_match", "syntax_pass")
"""Computed whatever `eval.metrics` says (added in front when missing): the metrics results.json requires
(`codecl.results.REQUIRED_METRICS`); `bleu` is the headline and the one forgetting is computed on."""


def metric_help() -> str:
    """`name (description)` of every metric `eval.metrics` may name (CLI help, errors)."""
    return "; ".join(f"{s.name} ({s.description})" for s in METRICS if s.selectable)


def check_metrics_installed(names) -> None:
    """ConfigError for the first metric of `names` whose package is missing (before a run starts)."""
    for name in names:
        METRICS.get(name).check_installed()
