"""The library's layout: every module imports only modules of a lower layer, so there is no cycle, and no semscale
import hides inside a function."""

import ast
from pathlib import Path

import semscale

PACKAGE = Path(semscale.__file__).parent

# Lowest first. A module may import only modules listed before it.
LAYERS = [
    # foundations: no semscale imports beyond this group
    ["progress", "records", "scale", "stats", "metrics", "subsets", "models", "losses"],
    ["data", "pool", "plots", "profiles"],
    # the run's configuration
    ["config"],
    # the engine
    ["pipeline", "checkpoint", "cache"],
    ["metaweight"],
    ["build"],
    ["drift", "features"],
    ["train", "second_stage"],
    ["cli", "stack"],
    # many runs and their tables
    ["methods", "sweep", "results", "transfer"],
    # the notebooks' chapters and the runner
    ["study.paper", "study.taxonomy", "study.primer"],
    ["study.bias", "study.marginal", "study.longtail"],
    ["runner", "findings", "sweep_cli"],
]
ORDER = [m for layer in LAYERS for m in layer]


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def _semscale_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported semscale module, inside a function?) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    package = _module_name(path).rpartition(".")[0]
    in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f)}
    main_guard = {id(n) for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
                  for n in ast.walk(node)}  # `python -m semscale.train` hands over to the CLI: entry-point glue
    found = []
    for node in ast.walk(tree):
        if id(node) in main_guard:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from .x import y / from .. import x
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base + ([node.module] if node.module else []))
                names = [prefix] if node.module else [f"{prefix}.{a.name}".lstrip(".") for a in node.names]
            elif node.module and node.module.startswith("semscale"):
                rest = node.module[len("semscale"):].lstrip(".")
                names = [rest] if rest else [a.name for a in node.names]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [a.name[len("semscale."):] for a in node.names if a.name.startswith("semscale.")]
        else:
            continue
        for name in names:
            if name and name != "study":
                found.append((name, id(node) in in_function))
    return found


def test_every_module_has_a_layer():
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert modules == set(ORDER), f"modules without a layer: {modules - set(ORDER)}; layers naming no module: {set(ORDER) - modules}"


def test_imports_go_only_down_and_never_hide_in_functions():
    upward, hidden = [], []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__init__.py":
            continue
        me = _module_name(path)
        for target, inside in _semscale_imports(path):
            if target not in ORDER:
                raise AssertionError(f"{me} imports {target!r}, which is no module of the package")
            if ORDER.index(target) >= ORDER.index(me):
                upward.append(f"{me} -> {target}")
            if inside:
                hidden.append(f"{me} -> {target}")
    assert not upward, f"imports from a lower layer to a higher one (or within a module's own layer order): {upward}"
    assert not hidden, f"semscale imports inside functions: {hidden}"
