"""Build a method's model from its registry spec: one interface for every method.

A spec names its class (`MethodSpec.model_class`, or a built-in `kind` through
`codecl.registry.MODEL_KINDS`); each class offers the `ContinualLearner` interface that
`codecl.experiment` and `codecl.methods.accounting` drive, so adding a method means registering a
spec (and, only if no class fits, one subclass of `ContinualLearner` or of one of its subclasses), never a
branch in the loop. A plugin registers
its spec through the `codecl.methods` entry point (`codecl.registry`).
"""
from __future__ import annotations

from torch import nn

from codecl.methods.learner import ContinualLearner  # the interface every model class offers (re-exported)
from codecl.model.base import BaseInfo
from codecl.registry import METHODS, MODEL_KINDS as KIND_REFERENCES, MethodSpec, resolve


MODEL_KINDS: dict[str, type] = {kind: resolve(ref) for kind, ref in KIND_REFERENCES.items()}
"""The built-in kinds' classes."""


def build_model(base: nn.Module, method: str | MethodSpec, method_cfg, base_info: BaseInfo) -> ContinualLearner:
    """The model of `method` around the frozen `base`."""
    spec = METHODS.get(method) if isinstance(method, str) else method
    cls = spec.model_type()
    if not (isinstance(cls, type) and issubclass(cls, ContinualLearner)):
        from codecl.errors import ConfigError

        where = METHODS.origin(spec.name) if spec.name in METHODS else "its spec"
        raise ConfigError(f"method {spec.name!r} ({where}): model_class must be a subclass of "
                          f"codecl.methods.learner.ContinualLearner (e.g. codecl.methods.continual.ContinualModel), got {cls!r}")
    return cls(base, spec, method_cfg, base_info)


def routes_by_task(spec: MethodSpec, model) -> bool:
    """Evaluation picks the modules of each task (per-task modules): the spec says so, else a
    `ContinualModel` that does not opt out (`routes_by_task = False`, e.g. a merged adapter)."""
    from codecl.methods.continual import ContinualModel

    if spec.routes_by_task is not None:
        return spec.routes_by_task
    return isinstance(model, ContinualModel) and getattr(model, "routes_by_task", True)


def keeps_one_set_of_weights(spec: MethodSpec) -> bool:
    """The method's stages share one set of weights (only the last stage's is needed to load it)."""
    from codecl.methods.shared import SharedModel

    return issubclass(spec.model_type(), SharedModel)
