"""The import contract: codecl's modules form layers, and no import runs back up them.

Bottom to top (a module may import its own layer and the layers below it, never one above):

0. foundation  `errors`, `paths`, `fileio`, `config`, `languages`, `hardware` (device choice, bf16 speed),
               `distributed`, `memory`, `checkpoint`, `provenance`, `registry` (the names of methods, metrics and
               languages; code of upper layers only as "module:attr" references): no model, no data, no results.
1. data        `codecl.data`: records, cleaning, corpora and tasks, tokenization and batching.
2. model       `codecl.model`: bases (T5, causal LMs, the embedded one), inserted blocks, dropout.
3. measure     `codecl.evaluation` (loss, generation, metrics, intervals, claims) and `codecl.execution`
               (the sandbox, pass@k, sampling): they measure a model or a results document, whatever trained it.
4. methods     `codecl.methods` (the learners) and `codecl.train` (the training loop).
5. results     `results` (results.json), `report`, `routing`, `orders`.
6. serve       `codecl.serve`, `export`: a finished run's models, loaded, served, exported.
7. experiment  `experiment`, `launchers`, `sweep`, `tracking`: running the grid (which serving never needs).
8. cli         `cli`, `__main__`, and the package itself (`codecl.load`, the Python API's entry point).

Imports inside functions count as well as module-level ones: they run too. The package's
`__init__` imports nothing at module level, so reading `codecl.__version__` from any layer
is reading a constant, not an import of the top layer.

Also: no cycle among module-level imports (importing the package in any order works), and no
cycle at all, counting function-level imports, between two modules of different layers (implied by
the layers) or within the measure layer's `evaluation` (summary and claims).
"""
from __future__ import annotations

import ast
from pathlib import Path

import codecl

ROOT = Path(codecl.__file__).parent

LAYERS = [
    ("foundation", ["errors", "paths", "fileio", "config", "languages", "hardware", "distributed", "memory", "checkpoint",
                    "provenance", "registry"]),
    ("data", ["data"]),
    ("model", ["model"]),
    ("measure", ["evaluation", "execution"]),
    ("methods", ["methods", "train"]),
    ("results", ["results", "report", "routing", "orders"]),
    ("serve", ["serve", "export"]),
    ("experiment", ["experiment", "launchers", "sweep", "tracking"]),
    ("cli", ["cli", "__main__", ""]),
]
LEVEL = {f"codecl.{name}" if name else "codecl": i for i, (_, names) in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer(module: str) -> int:
    """The layer of `module`: its own entry, else its package's (longest prefix)."""
    name = module
    while name not in LEVEL:
        name = name.rpartition(".")[0]
    return LEVEL[name]


def imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported codecl module, line, module-level?) for every import statement of `module`.
    `from P import x` counts as importing `P.x` when that is a module, else `P`; importing a module
    also runs its packages' `__init__`s, which count too (unless they enclose `module`)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(anchor + ([child.module] if child.module else []))
                targets = []
                for alias in child.names:
                    if f"{base}.{alias.name}" in MODULES:
                        targets.append(f"{base}.{alias.name}")
                    elif not (base == "codecl" and alias.name == "__version__"):  # the constant; see the docstring
                        targets.append(base)
            else:
                visit(child, top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
                continue
            for target in targets:
                if target != "codecl" and not target.startswith("codecl."):
                    continue
                parts = target.split(".")
                for i in range(2, len(parts)):  # the enclosing packages' __init__s run first
                    parent = ".".join(parts[:i])
                    if not (module == parent or module.startswith(parent + ".")):
                        found.append((parent, child.lineno, top))
                found.append((target, child.lineno, top))

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return sorted(set(found))


EDGES = {m: imports(m) for m in MODULES}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return found


def test_every_module_has_a_layer_and_every_import_resolves():
    assert all(layer(m) is not None for m in MODULES)
    unknown = sorted({f"{m} imports {t}" for m, found in EDGES.items() for t, _, _ in found if t not in MODULES})
    assert not unknown, unknown


def test_the_package_init_imports_nothing_at_module_level():
    assert not [t for t, _, top in EDGES["codecl"] if top]
    tree = ast.parse(MODULES["codecl"].read_text(encoding="utf-8"))
    assert not [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_no_import_runs_up_the_layers():
    upward = sorted(f"{m}:{line} imports {t} ({LAYERS[layer(m)][0]} -> {LAYERS[layer(t)][0]}{'' if top else ', in a function'})"
                    for m, found in EDGES.items() for t, line, top in found if layer(t) > layer(m))
    assert not upward, "\n".join(upward)


def test_no_cycle_among_module_level_imports():
    edges = {m: {t for t, _, top in found if top and t != m} for m, found in EDGES.items()}
    assert not _cycles(edges)


def test_no_cycle_between_layers_or_within_evaluation():
    """Counting function-level imports: a cycle may stay inside one layer (e.g. a package's modules
    that call each other lazily), but never between layers, nor between evaluation's summary and claims."""
    edges = {m: {t for t, _, _ in found if t != m} for m, found in EDGES.items()}
    for cycle in _cycles(edges):
        assert len({layer(m) for m in cycle}) == 1, cycle
        assert not any(m.startswith("codecl.evaluation") for m in cycle), cycle
