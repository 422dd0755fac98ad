"""The method registry: each continual-learning method is a small spec of which modules it adds.

| method        | LoRA per task | inserted block          |
|---------------|---------------|-------------------------|
| lora          | yes           | none                    |
| full_layer    | no            | one per task            |
| hybrid        | yes           | one per task            |
| hybrid_shared | yes           | one, shared by all tasks and trained again with each |
"""
from __future__ import annotations

from dataclasses import dataclass

from codecl.errors import ConfigError


@dataclass(frozen=True)
class MethodSpec:
    name: str
    lora: bool
    """Adds a PEFT LoRA adapter per task."""
    block: str | None
    """None, `per_task` or `shared`."""
    description: str


class Registry:
    """A name -> spec map whose miss lists what exists (lm-evaluation-harness style)."""

    def __init__(self, kind: str):
        self.kind, self._items = kind, {}

    def register(self, spec: MethodSpec) -> MethodSpec:
        if spec.name in self._items:
            raise ValueError(f"{self.kind} {spec.name!r} registered twice")
        self._items[spec.name] = spec
        return spec

    def get(self, name: str) -> MethodSpec:
        if name not in self._items:
            raise ConfigError(f"Unknown {self.kind} {name!r}. Available: {', '.join(self._items)}")
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)


METHODS = Registry("method")
METHODS.register(MethodSpec("lora", True, None, "a new LoRA adapter per task"))
METHODS.register(MethodSpec("full_layer", False, "per_task", "a new inserted transformer block per task"))
METHODS.register(MethodSpec("hybrid", True, "per_task", "per-task LoRA + per-task inserted block"))
METHODS.register(MethodSpec("hybrid_shared", True, "shared", "per-task LoRA + one inserted block shared by all tasks"))
