"""The layers: reasoner <- data_builder <- predictor <- export <- tale, no arrow back up, and no import cycle
between the project's modules, counting the imports made inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = ("reasoner", "data_builder", "predictor", "export", "tale")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for layer in LAYERS for p in (REPO / layer).rglob("*.py")}


def imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import sub`` imports pkg.sub when sub is a module, else pkg itself
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports; a package's own submodules are left out of its edges (a package
    ``__init__`` that loads its submodules on demand, as ``reasoner.backends.make_backend`` does, is not a cycle)."""
    modules = project_modules()
    return {name: {m for m in imports(path, modules) if m != name and not m.startswith(name + ".")} for name, path in modules.items()}


def test_no_module_imports_a_layer_above_its_own() -> None:
    def layer(name: str) -> int:
        return LAYERS.index(name.split(".")[0])

    upward = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets if layer(b) > layer(a))
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle_and_the_layer_check_an_upward_arrow() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    modules = project_modules()
    assert "tale.eval.runs" in imports(modules["tale.eval.sources"], modules)  # lazy imports count


@pytest.mark.parametrize("package", ["tale.cli", "tale.eval", "tale.serve"])
def test_the_front_door_is_split_by_concern(package: str) -> None:
    assert any(name.startswith(package + ".") for name in project_modules())
