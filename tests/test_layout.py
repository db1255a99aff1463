"""The package layout keeps its promises: no import cycles between modules, no
private name used outside the module that defines it, and each subpackage's
dependencies point one way (format <- trust <- export/runtime/training <- api/cli)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bundle"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> Iterator[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for every bundle import in a module,
    module level or inside a function alike: a lazy import is still a dependency."""
    path = MODULES[name]
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("bundle"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:
                    yield sub, "", node.lineno
                else:
                    yield target, alias.name, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("bundle"):
                    yield alias.name, "", node.lineno


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for target, _, _ in _imports(m):
            if target in MODULES and target != m:
                graph[m].add(target)
    return graph


def _is_ancestor_package(a: str, b: str) -> bool:
    """A package's __init__ re-exporting from its own submodules is not a cycle."""
    return b.startswith(a + ".")


def test_no_import_cycles() -> None:
    graph = {
        m: {t for t in ts if not _is_ancestor_package(t, m) and not _is_ancestor_package(m, t)}
        for m, ts in _graph().items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append([*stack[stack.index(t) :], t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_private_names_cross_modules() -> None:
    crossing = []
    for m in MODULES:
        for target, imported, line in _imports(m):
            if imported.startswith("_") and not imported.startswith("__"):
                crossing.append(
                    f"{MODULES[m].relative_to(PACKAGE.parent)}:{line} imports "
                    f"{imported} from {target}"
                )
        # module._private attribute access on an imported bundle module
        tree = ast.parse(MODULES[m].read_text(encoding="utf-8"))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    aliases[alias.asname or alias.name] = alias.name
        imported_modules = {
            a for a, real in aliases.items() if any(t.endswith("." + real) for t in MODULES)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in imported_modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                crossing.append(
                    f"{MODULES[m].relative_to(PACKAGE.parent)}:{node.lineno} uses "
                    f"{node.value.id}.{node.attr}"
                )
    assert not crossing, "private names used across modules:\n" + "\n".join(crossing)


# Which subpackage may import which: the architecture, written down once.
ALLOWED = {
    "format": {"format"},
    "trust": {"format", "trust"},
    "runtime": {"format", "trust", "runtime"},
    "training": {"format", "trust", "training"},
    "export": {"format", "trust", "runtime", "training", "export"},
    # the operational layer: built on the library's public functions (api)
    "store": {"format", "trust", "runtime", "api", "store"},
    "serve": {"format", "trust", "runtime", "store", "api", "serve"},
    "legacy": {"format", "trust", "export", "training", "api", "legacy"},
    "integrations": {"format", "trust", "runtime", "store", "api", "integrations"},
}


@pytest.mark.parametrize("package", sorted(p for p in ALLOWED if (PACKAGE / p).is_dir()))
def test_subpackage_dependencies_point_one_way(package: str) -> None:
    wrong = []
    for m in MODULES:
        parts = m.split(".")
        if len(parts) < 2 or parts[1] != package:
            continue
        for target, _, line in _imports(m):
            tparts = target.split(".")
            if len(tparts) < 2 or tparts[1] in ("errors", "_version"):
                continue
            if tparts[1] not in ALLOWED[package]:
                wrong.append(f"{MODULES[m].relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not wrong, f"bundle.{package} reaches outside what it may use:\n" + "\n".join(wrong)


def test_every_folder_says_what_it_owns() -> None:
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc, f"{init.relative_to(PACKAGE.parent)} has no docstring saying what it owns"
