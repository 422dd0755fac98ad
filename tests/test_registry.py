"""`codecl.registry`: one registry per kind of name, entry-point plugins, plugin config sections."""
from __future__ import annotations

import dataclasses
from importlib.metadata import EntryPoint

import pytest

from codecl.config import METHOD_NAMES, from_dict, load_config, to_dict
from codecl.errors import ConfigError
from codecl.registry import METHODS, MethodSpec, Registry


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    description: str = ""


def _registry_with(monkeypatch, entries: dict[str, str]) -> Registry:
    """A fresh registry whose entry-point group holds `entries` (name -> "module:attr")."""
    eps = [EntryPoint(name, value, "test.group") for name, value in entries.items()]
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group=None: [e for e in eps if e.group == group])
    reg = Registry("thing", Spec, group="test.group")
    reg.register(Spec("builtin"))
    return reg


GOOD = Spec("good", "from a plugin")
TWO = [Spec("one"), Spec("two")]


def make_spec():
    return Spec("made")


def test_study_methods_are_the_default_and_come_from_the_registry():
    assert METHOD_NAMES == ("lora", "full_layer", "hybrid", "hybrid_shared") == load_config("smoke").methods
    assert all(METHODS.get(m).study for m in METHOD_NAMES)
    assert [s.name for s in METHODS if s.study] == list(METHOD_NAMES)


def test_unknown_name_lists_what_exists():
    with pytest.raises(ConfigError, match="Unknown method 'lroa'. Available: lora, full_layer, hybrid"):
        METHODS.get("lroa")
    with pytest.raises(ConfigError, match=r"unknown method\(s\) \['lroa'\]; available: lora, full_layer"):
        load_config("smoke", overrides=["methods=[lroa]"])


def test_entry_points_register_specs_lists_and_factories(monkeypatch):
    reg = _registry_with(monkeypatch, {"good": f"{__name__}:GOOD", "pair": f"{__name__}:TWO", "made": f"{__name__}:make_spec"})
    assert reg.names() == ["builtin", "good", "one", "two", "made"]
    assert reg.get("good") is GOOD and reg.origin("builtin") == "codecl"
    assert reg.origin("good").startswith(f"entry point good = {__name__}:GOOD (group test.group, ")


def test_broken_plugin_is_named_when_asked_for(monkeypatch):
    reg = _registry_with(monkeypatch, {"ghost": "no_such_module_xyz:SPEC", "good": f"{__name__}:GOOD"})
    assert "good" in reg and "ghost" not in reg.names()  # the others still load
    with pytest.raises(ConfigError, match=r"thing 'ghost': entry point ghost = no_such_module_xyz:SPEC .*ModuleNotFoundError"):
        reg.get("ghost")
    assert "ModuleNotFoundError" in reg.broken()["ghost"]


def test_plugin_may_not_take_a_builtin_name(monkeypatch):
    reg = _registry_with(monkeypatch, {"builtin": f"{__name__}:CLASH"})
    assert reg.get("builtin").description == ""  # codecl's own stays
    assert "registered twice" in reg.broken()["builtin"]


CLASH = Spec("builtin", "an impostor")


def test_wrong_object_is_refused(monkeypatch):
    reg = _registry_with(monkeypatch, {"odd": "math:pi"})
    with pytest.raises(ConfigError, match="holds Spec objects, got float"):
        reg.get("odd")


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    rank: int = 2

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")


@pytest.fixture
def tiny_method():
    from codecl.methods.continual import ContinualModel

    spec = MethodSpec("tiny_test_method", True, None, "test", model_class=ContinualModel, config_class=TinyConfig)
    METHODS.register(spec)
    yield spec
    METHODS.unregister(spec.name)


def test_plugin_section_is_built_validated_and_round_trips(tiny_method):
    cfg = load_config("smoke", overrides=["methods=[tiny_test_method]", "method.tiny_test_method.rank=5"])
    assert cfg.method.section("tiny_test_method") == TinyConfig(5)
    assert cfg.method.section("lora") is cfg.method.lora
    plain = to_dict(cfg)
    assert plain["method"]["tiny_test_method"] == {"rank": 5} and "plugins" not in plain["method"]
    assert from_dict(plain) == cfg  # config.yaml of a run reads back the same
    assert load_config("smoke", overrides=["methods=[tiny_test_method]"]).method.section("tiny_test_method") == TinyConfig(2)
    for override, message in (("method.tiny_test_method.rank=0", "method.tiny_test_method: rank must be >= 1, got 0"),
                              ("method.tiny_test_method.rnak=3", r"method.tiny_test_method.rnak is not a known key \(known: rank\)"),
                              ("method.nonexistent.x=1", "method.nonexistent is not a known key")):
        with pytest.raises(ConfigError, match=message):
            load_config("smoke", overrides=[override])


def test_plugin_model_class_is_built(tiny_method):
    from codecl.methods.build import build_model, routes_by_task
    from codecl.methods.continual import ContinualModel
    from codecl.model.base import BaseInfo
    from helpers import make_base, tiny_config

    base = make_base(tiny_config())
    cm = build_model(base, "tiny_test_method", load_config("smoke").method, BaseInfo("t", "t", "t", 0))
    assert type(cm) is ContinualModel and cm.spec is tiny_method and routes_by_task(tiny_method, cm)


def test_plugin_model_class_must_be_a_learner():
    from codecl.methods.build import build_model
    from codecl.model.base import BaseInfo
    from helpers import make_base, tiny_config

    spec = MethodSpec("not_a_learner", True, None, "test", model_class=dict)
    METHODS.register(spec)
    try:
        with pytest.raises(ConfigError, match="model_class must be a subclass of codecl.methods.learner.ContinualLearner"):
            build_model(make_base(tiny_config()), "not_a_learner", load_config("smoke").method, BaseInfo("t", "t", "t", 0))
    finally:
        METHODS.unregister(spec.name)


def test_a_learner_that_leaves_out_part_of_the_interface_cannot_be_built():
    from codecl.methods.learner import ContinualLearner

    class Half(ContinualLearner):
        def stages(self, tasks):
            return []

    with pytest.raises(TypeError, match="abstract method"):
        Half(None, "lora", load_config("smoke").method, None)
