"""The code's shape (issue 12): layers import only downward, no import cycle, short functions.

Read from the source with ``ast`` (every import counts, also those inside functions), checked
against the layer map written here and in the README's module map.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("dissect", "broden_builder")

#: dissect's layers, lowest first: a module may import modules of a lower layer, or of its own
#: layer inside its own subpackage (dissect.stats, dissect.report).
DISSECT_LAYERS = [
    ["dissect.errors", "dissect.basis", "dissect.resources"],
    ["dissect.layouts", "dissect.selectors"],
    ["dissect.stats", "dissect.distributed", "dissect.hooks", "dissect.models", "dissect.activations",
     "dissect.preprocess"],
    ["dissect.config", "dissect.results", "dissect.cache", "dissect.checkpoint", "dissect.capture",
     "dissect.tally_batches"],
    ["dissect.engine", "dissect.explain.output"],
    ["dissect.runner", "dissect.segment"],
    ["dissect.report", "dissect.explain", "dissect.ablate"],
    ["dissect.notebook"],
    ["dissect.api", "dissect.compare"],
    ["dissect.cli"],
    ["dissect.demo"],
]

#: broden_builder's layers, lowest first (same rule). download/ knows files and URLs only; sources/
#: may use it; acquisition (acquire.py) uses both; the build, add and plan sit above.
BUILDER_LAYERS = [
    ["broden_builder.progress", "broden_builder.suggest", "broden_builder.process"],
    ["broden_builder.errors", "broden_builder.color", "broden_builder.resize", "broden_builder.curated_names",
     "broden_builder.synonyms"],
    ["broden_builder.store", "broden_builder.unify"],
    ["broden_builder.torch_dataset", "broden_builder.download"],
    ["broden_builder.sources"],
    ["broden_builder.recipe_schema"],  # checks entries against each source type's schema
    ["broden_builder.recipe", "broden_builder.acquire"],
    ["broden_builder.build", "broden_builder.recipe_doc"],
    ["broden_builder.plan", "broden_builder.extend"],
    ["broden_builder.cli_errors"],
    ["broden_builder.cli"],
]
LAYERS = {"dissect": DISSECT_LAYERS, "broden_builder": BUILDER_LAYERS}

MAX_LINES = 60
#: Functions over MAX_LINES allowed for now, each with who is splitting it.
LONG_FUNCTIONS_PENDING: dict = {}


def _modules():
    for pkg in PACKAGES:
        for p in sorted((REPO / pkg).rglob("*.py")):
            parts = list(p.relative_to(REPO).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            yield ".".join(parts), p, is_pkg


def _imports(name: str, path: Path, is_pkg: bool) -> set:
    """(imported module, names) of the project's packages; relative imports resolved."""
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom):
            mod = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module or ""
            names = tuple(a.name for a in node.names)
            if mod in PACKAGES and names != ("__version__",):  # a package root's own submodules
                out |= {(f"{mod}.{n}", ()) for n in names}
            else:
                out.add((mod, names))
        elif isinstance(node, ast.Import):
            out |= {(a.name, ()) for a in node.names}
    return {(m, n) for m, n in out if m.split(".")[0] in PACKAGES}


def _graph() -> dict:
    mods = {m: (p, k) for m, p, k in _modules()}
    graph = {}
    for m, (p, k) in mods.items():
        deps = set()
        for target, names in _imports(m, p, k):
            if names == ("__version__",) and target in PACKAGES:
                continue  # the version string of a package root is not a layer
            while target not in mods and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != m:
                deps.add(target)
        graph[m] = deps
    return graph


def _layer(mod: str):
    for i, group in enumerate(LAYERS[mod.split(".")[0]]):
        for g in group:
            if mod == g or mod.startswith(g + "."):
                return i, g
    return None


def test_builder_never_imports_dissect():
    bad = [(m, d) for m, deps in _graph().items() if m.startswith("broden_builder") for d in deps if d.startswith("dissect")]
    assert not bad, f"broden_builder is below dissect: {bad}"


@pytest.mark.parametrize("pkg", PACKAGES)
def test_imports_point_down(pkg):
    bad = []
    graph = _graph()
    for m, deps in graph.items():
        if not m.startswith(pkg + "."):
            continue  # the package root is the public facade above every layer
        assert _layer(m) is not None, f"{m} is in no layer of LAYERS[{pkg!r}]"
        lm, gm = _layer(m)
        for d in deps:
            if d.split(".")[0] != pkg:
                continue
            assert d != pkg, f"{m} imports the package root {pkg} (import the module that defines the name)"
            ld = _layer(d)
            if ld[0] > lm or (ld[0] == lm and ld[1] != gm):
                bad.append(f"{m} (layer {lm}) imports {d} (layer {ld[0]})")
    assert not bad, "imports that climb a layer:\n" + "\n".join(bad)


@pytest.mark.parametrize("pkg", PACKAGES)
def test_no_import_cycle(pkg):
    graph = {m: {d for d in deps if d.startswith(pkg)} for m, deps in _graph().items() if m.startswith(pkg)}
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}  # a package's own __init__
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _format_parser(path: Path) -> bool:
    """Sources' format parsers (the readers of a dataset's own files) may be long."""
    rel = path.relative_to(REPO).parts
    return rel[:2] == ("broden_builder", "sources")


def test_functions_are_short():
    long = []
    for _, path, _ in _modules():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                key = f"{path.relative_to(REPO)}:{node.name}"
                if n > MAX_LINES and key not in LONG_FUNCTIONS_PENDING and not _format_parser(path):
                    long.append(f"{key} ({n} lines)")
    assert not long, f"functions over {MAX_LINES} lines: {long}"
