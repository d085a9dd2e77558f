"""The code's shape: layers import only downward, folders are entered through their ``__init__``,
no import cycle, short functions.

Read from the source with ``ast`` (every import counts, also those inside functions). The layers are
the packages' folders and top-level modules, lowest first: every module of a folder sits in its
folder's layer, so a new module needs no entry here; a new folder or top-level module does, and the
map must name every one that exists and none that does not (the README's module map shows the same).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("dissect", "broden_builder")

#: dissect's layers, lowest first: each entry is a folder (a subpackage, with every module in it) or
#: a top-level module. A module may import a lower layer, or its own folder; another folder is
#: entered through its ``__init__`` (its ``_private`` modules are for itself).
DISSECT_LAYERS = [
    ["errors"],
    ["stats", "capture", "sae"],  # the exact statistics; models and layers to [B, U, h, w] feature maps;
                                  # sparse autoencoders: [B, U, h, w] -> [B, F, h, w] features, training
    ["config", "results"],     # the settings; one layer's result and its files
    ["engine"],                # the run: probe, both passes, checkpoints, cache, workers, ranks
    ["explain"],
    ["describe"],              # open-vocabulary words per unit (CLIP-Dissect); the report shows them
    ["report"],
    ["tools"],                 # compare, ablate, segment, notebook
    ["api"],
    ["cli"],
    ["__main__"],  # python -m dissect
    ["demo"],
]

#: broden_builder's layers, lowest first (same rule). download/ knows files and URLs only; sources/
#: may use it; acquisition (acquire.py) uses both; the build, add and plan sit above.
BUILDER_LAYERS = [
    ["words", "userfiles", "yamlfile"],
    ["progress", "suggest", "process"],
    ["errors", "color", "resize", "curated_names", "synonyms"],
    ["store", "unify"],
    ["torch_dataset", "download"],
    ["sources"],
    ["recipe_schema"],  # checks entries against each source type's schema
    ["recipe", "acquire"],
    ["build"],
    ["plan", "extend"],
    ["cli_errors"],
    ["cli"],
    ["shared"],  # the floor dissect may use: re-exports only, above all it names
    ["__main__"],  # python -m broden_builder
]
LAYERS = {"dissect": DISSECT_LAYERS, "broden_builder": BUILDER_LAYERS}


def _entries(pkg: str) -> set:
    """The folders (with an __init__.py) and top-level modules of ``pkg`` as they are on disk."""
    root = REPO / pkg
    mods = {p.stem for p in root.glob("*.py") if p.stem != "__init__"}
    return mods | {p.parent.name for p in root.glob("*/__init__.py")}


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
    pkg = mod.split(".")[0]
    for i, group in enumerate(LAYERS[pkg]):
        for g in group:
            g = f"{pkg}.{g}"
            if mod == g or mod.startswith(g + "."):
                return i, g
    return None


@pytest.mark.parametrize("pkg", PACKAGES)
def test_layer_map_is_the_folders(pkg):
    """Every folder and top-level module is in one layer; the map names nothing that does not exist."""
    named = [e for group in LAYERS[pkg] for e in group]
    assert len(named) == len(set(named)), f"an entry is named twice in LAYERS[{pkg!r}]"
    on_disk = _entries(pkg)
    assert not set(named) - on_disk, f"LAYERS[{pkg!r}] names what does not exist: {sorted(set(named) - on_disk)}"
    assert not on_disk - set(named), f"not in any layer of LAYERS[{pkg!r}]: {sorted(on_disk - set(named))}"


@pytest.mark.parametrize("pkg", PACKAGES)
def test_folders_entered_through_init(pkg):
    """Outside a folder, nobody imports its ``_private`` modules: the folder's __init__ exports them."""
    bad = []
    for m, deps in _graph().items():
        if not m.startswith(pkg + "."):
            continue
        for d in deps:
            parts = d.split(".")
            for i, part in enumerate(parts):
                if part.startswith("_") and not part.startswith("__"):
                    owner = ".".join(parts[:i])
                    if not (m + ".").startswith(owner + "."):
                        bad.append(f"{m} imports {d} (import it from {owner})")
                    break
    assert not bad, "private modules imported from outside their folder:\n" + "\n".join(bad)


#: What dissect may import of broden_builder: the public API (the package root, the torch dataset),
#: the shared floor, and the build functions the demo uses to make its store.
DISSECT_USES = {"broden_builder", "broden_builder.torch_dataset", "broden_builder.shared", "broden_builder.build",
                "broden_builder.recipe", "broden_builder.sources.synthetic.source"}


def test_dissect_uses_the_builders_floor_only():
    modules = {m for m, _, _ in _modules() if m.startswith("broden_builder")}
    bad = sorted({f"{m} imports {t}" for m, p, k in _modules() if m.startswith("dissect")
                  for t, _ in _imports(m, p, k) if t.startswith("broden_builder") and t not in DISSECT_USES
                  and (t in modules or t.rsplit(".", 1)[0] != "broden_builder")})  # not a name of the root
    assert not bad, "dissect imports broden_builder internals (use broden_builder.shared):\n" + "\n".join(bad)


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


#: Readers of a dataset's own file formats, the only files whose functions may be long.
FORMAT_PARSERS = frozenset({
    "broden_builder/sources/ade20k/index2016.py", "broden_builder/sources/ade20k/release2021.py",
    "broden_builder/sources/opensurfaces/release.py", "broden_builder/sources/pascal/matfiles.py",
    "broden_builder/sources/pascal/partnames.py",
})


def _format_parser(path: Path) -> bool:
    """Sources' format parsers (the readers of a dataset's own files) may be long."""
    return path.relative_to(REPO).as_posix() in FORMAT_PARSERS


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


#: Exceptions that are not errors a caller sees: control flow caught where it is raised, and the
#: shared base of both packages' errors.
NOT_ERRORS = {"dissect.capture._hooks.StopForward", "broden_builder.build.StageUnreadable",
              "broden_builder.download.transfer._Transient", "broden_builder.download.transfer._Unresolved",
              "broden_builder.yamlfile._DuplicateKey",
              "broden_builder.errors.InputError",
              "broden_builder.cli_errors.Terminated"}  # a signal turned into unwinding, like KeyboardInterrupt


@pytest.mark.parametrize("pkg,base", [("dissect", "dissect.errors.DissectError"),
                                      ("broden_builder", "broden_builder.errors.BrodenError")])
def test_every_error_class_has_the_package_base(pkg, base):
    """Each exception class a package defines derives from its base error, so one ``except`` and the
    commands' one-line report (broden_builder.cli_errors) cover it."""
    import importlib
    import inspect

    mod_name, cls_name = base.rsplit(".", 1)
    root = getattr(importlib.import_module(mod_name), cls_name)
    bad = []
    for name, path, _ in _modules():
        if not name.startswith(pkg) or name.endswith("__main__"):
            continue
        tree = ast.parse(path.read_text("utf-8"))
        classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
        if not classes:
            continue
        mod = importlib.import_module(name)
        for c in classes:
            obj = getattr(mod, c)
            if inspect.isclass(obj) and issubclass(obj, BaseException) and not issubclass(obj, root) \
                    and f"{name}.{c}" not in NOT_ERRORS:
                bad.append(f"{name}.{c}")
    assert not bad, f"exception classes that do not derive from {base}: {bad}"


def test_cli_errors_judge_by_class_not_name():
    """An error is reported as input (one line) by its class, not by its name."""
    from broden_builder.cli_errors import describe
    from dissect.errors import DissectError

    class Mine(DissectError):
        pass

    assert describe(Mine("layer4: no such layer")) == "layer4: no such layer"
    impostor = type("DissectError", (Exception,), {})  # a look-alike name, not the class
    assert "this is a bug" in describe(impostor("boom"))


def test_ci_runs_lint_and_tests():
    """.ci/run runs `make lint` and `make test`; lint covers at least the folders issue 23 names."""
    ci = (REPO / ".ci" / "run").read_text("utf-8")
    assert "make lint" in ci and "make test" in ci
    make = (REPO / "Makefile").read_text("utf-8")
    line = next(line for line in make.splitlines() if line.startswith("LINTED"))
    linted = line.split(":=")[1].split()
    need = ("dissect/stats", "dissect/engine", "dissect/capture", "broden_builder/store")
    # a folder is covered when it or a folder above it is linted (LINTED may name the whole package)
    missing = [f for f in need if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in linted)]
    assert not missing, f"make lint does not cover {missing}"


def test_dissect_states_rules_not_issue_numbers():
    """Comments and docstrings in dissect/ and broden_builder/ say the rule, not "issue N" (a number
    tells a reader nothing)."""
    import re

    bad = [f"{p.relative_to(REPO)}:{i}" for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*"))
           if p.suffix in (".py", ".md", ".yaml", ".txt") and p.is_file()
           for i, line in enumerate(p.read_text("utf-8").splitlines(), 1) if re.search(r"\bissues? \d+", line, re.I)]
    assert not bad, f"'issue N' instead of the rule: {bad}"


def test_readme_module_map_lists_each_dissect_folder_once():
    """The README's module map of dissect/ is one table: every folder on disk once, no duplicate rows."""
    text = (REPO / "README.md").read_text("utf-8")
    table = text.split("`dissect/` (lowest first)", 1)[1].split("`broden_builder/` (lowest first)", 1)[0]
    rows = [line for line in table.strip().splitlines() if line.startswith("| `")]
    assert "\n\n|" not in table.strip(), "the module map table is split by blank lines"
    keys = [r.split("|")[1].strip() for r in rows]
    assert len(keys) == len(set(keys)), f"rows listed twice: {sorted(k for k in keys if keys.count(k) > 1)}"
    folders = {p.parent.name for p in (REPO / "dissect").glob("*/__init__.py")}
    listed = {k.strip("`/") for key in keys for k in key.split(", ")}
    assert folders <= listed, f"folders missing from the README's module map: {sorted(folders - listed)}"
