"""The layout keeps its promises (docs/architecture.md): no import cycles between kernel_eft's modules,
counting the imports inside functions too; argparse only in the CLI; the simulator and the theory never
import each other; data flow one way (core <- simulate, theory <- diagnose <- figures <- api <- cli; the study
room, kernel_eft.study, sits above diagnose and theory and is used only by the API, the CLI and the workflow)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "kernel_eft"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """Every kernel_eft module `name` imports, at any depth of its code (functions included).  `from A import b`
    counts as importing A.b when A.b is a module, else A; relative imports are resolved."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def test_the_package_has_the_documented_rooms():
    for room in ("core", "simulate", "theory", "diagnose", "figures", "study"):
        assert f"kernel_eft.{room}" in MODULES, room
    for module in ("schema", "api", "cli", "io"):
        assert f"kernel_eft.{module}" in MODULES, module


def test_no_import_cycles():
    """Depth-first search for a back edge; the failure names the cycle."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)


def _imports_anything(name: str, wanted: str) -> bool:
    tree = ast.parse(MODULES[name].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == wanted for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == wanted and not node.level:
            return True
    return False


def test_argparse_only_in_the_cli():
    users = sorted(name for name in MODULES if _imports_anything(name, "argparse"))
    assert users == ["kernel_eft.cli"]


def room(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("source, forbidden", [
    ("simulate", "theory"), ("theory", "simulate"),  # the referee never computes with what it referees
    ("core", "simulate"), ("core", "theory"), ("core", "diagnose"), ("core", "figures"),
    ("simulate", "diagnose"), ("theory", "diagnose"), ("simulate", "figures"), ("theory", "figures"),
    ("diagnose", "figures"), ("diagnose", "simulate"),
    # the study plans runs: it reads the registries and spells tags, it never simulates, draws or calls the API
    ("study", "simulate"), ("study", "figures"), ("core", "study"), ("simulate", "study"), ("theory", "study"),
    ("diagnose", "study"), ("figures", "study"),
])
def test_data_flows_one_way(source, forbidden):
    offenders = sorted(f"{name} -> {dep}" for name, deps in GRAPH.items() if room(name) == source
                       for dep in deps if room(dep) == forbidden)
    assert offenders == []


def test_the_study_room_does_not_use_the_api():
    assert not any(dep == "kernel_eft.api" for name, deps in GRAPH.items() if room(name) == "study" for dep in deps)


def test_nothing_but_the_cli_and_the_package_root_uses_the_api():
    users = sorted(name for name, deps in GRAPH.items() if "kernel_eft.api" in deps)
    assert set(users) <= {"kernel_eft", "kernel_eft.cli"}


# ---------------------------------------------------------------------------------------------
# A closure or an activation is named only in its own module (and in docs, docstrings and comments)
# ---------------------------------------------------------------------------------------------

# names that are also English words ("an exact identity", "a linear fit") count only where they are used as
# a name: the whole string, a quoted word, a theory label or config key, or after "closure" / "activation"
ENGLISH = {"exact", "linear"}
SUFFIXES = r"(_discrete|_continuum|_points|_L\d)"


def registered_names() -> dict[str, set[Path]]:
    """{name: the files allowed to name it}: a closure's own module (and the theory helpers it alone
    imports), an activation's module in core/activations/ (the folder: several share smooth.py)."""
    from kernel_eft.core.activations import ACTIVATIONS
    from kernel_eft.theory.registry import CLOSURES

    owners = {}
    activations = set((PACKAGE / "core" / "activations").glob("*.py"))
    for name in ACTIVATIONS:
        owners[name] = activations
    for name, closure in CLOSURES.items():
        own = MODULES[type(closure).__module__]
        private = {MODULES[m] for m in imports_of(type(closure).__module__)
                   if m.startswith("kernel_eft.theory.") and not any(
                       m in imports_of(other) for other in MODULES if other != type(closure).__module__
                       and other.startswith("kernel_eft.theory.") and MODULES[other] != MODULES[m])}
        owners[name] = {own} | private
    return owners


def name_pattern(name: str):
    import re

    if name not in ENGLISH:
        return re.compile(rf"\b{name}\b")
    return re.compile(rf"^{name}$|['\"`]{name}['\"`]|\b{name}{SUFFIXES}|\b(closure|activation)[ =:]+{name}\b")


def named_in_code(path: Path, pattern) -> list[str]:
    """Non-docstring string literals and identifiers of `path` that match."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant) and isinstance(node.body[0].value.value, str)}
    hits = []
    for node in ast.walk(tree):
        text = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
        elif isinstance(node, ast.Name):
            text = node.id
        elif isinstance(node, ast.Attribute):
            text = node.attr
        elif isinstance(node, ast.arg):
            text = node.arg
        if text is not None and pattern.search(text):
            hits.append(f"{path.relative_to(SRC)}:{node.lineno}: {text[:80]!r}")
    return hits


def test_no_closure_or_activation_is_named_outside_its_own_module():
    """Adding or renaming a closure or an activation is one file: the CLI, the schema, the study, the diagnostics
    and the captions take names, labels, options and cost models from the registries (docs/architecture.md)."""
    hits = []
    for name, allowed in registered_names().items():
        pattern = name_pattern(name)
        for path in sorted(set(MODULES.values()) - allowed):
            hits += named_in_code(path, pattern)
    assert hits == [], "closure or activation names outside their modules:\n" + "\n".join(hits)


def test_the_name_check_can_fail(tmp_path):
    """The check sees a name used as a value, and lets the English word pass."""
    bad = tmp_path / "bad.py"
    bad.write_text('"""An exact identity (docstring: allowed)."""\nif closure == "exact":\n    table = {"relu": 1}\n'
                   'label = f"exact_discrete"\nnote = "an exact identity"\n')
    src = SRC
    try:
        globals()["SRC"] = tmp_path
        found = named_in_code(bad, name_pattern("exact")) + named_in_code(bad, name_pattern("relu"))
    finally:
        globals()["SRC"] = src
    assert [hit.split(": ", 1)[1] for hit in found] == ["'exact'", "'exact_discrete'", "'relu'"]
