"""The runtime package's imports: no cycles among its modules, nothing from the layers above.

Every import counts: top level, inside functions and under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import redfl.runtime

RUNTIME = Path(redfl.runtime.__file__).resolve().parent
ABOVE = (
    "redfl.schemas",
    "redfl.run",
    "redfl.platform",
    "redfl.edge",
    "redfl.commands",
    "redfl.cli",
)
"""The modules and packages above the runtime (the root ``redfl`` is checked apart: its
``__init__`` imports the runtime)."""


def module_name(path: Path) -> str:
    return "redfl.runtime" if path.stem == "__init__" else f"redfl.runtime.{path.stem}"


def imported(source: str) -> set[str]:
    """Every module ``source`` imports (``from a import b`` counts ``a`` and ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module is not None, "a relative import"
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def runtime_graph() -> dict[str, set[str]]:
    """Runtime module -> the runtime modules it imports."""
    paths = {module_name(p): p for p in RUNTIME.glob("*.py")}
    return {name: (imports_of(path) & set(paths)) - {name} for name, path in paths.items()}


def imports_of(path: Path) -> set[str]:
    return imported(path.read_text(encoding="utf-8"))


def above(name: str) -> bool:
    """Whether module ``name`` is the root package or belongs to a layer above the runtime."""
    return name == "redfl" or any(name == a or name.startswith(f"{a}.") for a in ABOVE)


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules, the first repeated last), or ``None``."""
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> list[str] | None:
        if name in trail:
            return [*trail[trail.index(name) :], name]
        if name in done:
            return None
        for target in sorted(graph[name]):
            found = visit(target, [*trail, name])
            if found is not None:
                return found
        done.add(name)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found is not None:
            return found
    return None


def test_imports_in_functions_and_under_type_checking_count() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import redfl\n"
        "if TYPE_CHECKING:\n"
        "    from redfl.runtime.host import Host\n"
        "def f() -> None:\n"
        "    from redfl.runtime import tune\n"
    )
    names = imported(source)
    assert {"redfl", "redfl.runtime.host", "redfl.runtime.tune"} <= names
    assert [n for n in sorted(names) if above(n)] == ["redfl"]
    assert above("redfl.run.api") and above("redfl.cli") and not above("redfl.runtime.host")


def test_the_cycle_finder_finds_a_cycle_through_three_modules() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycle(graph) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_no_runtime_module_imports_another_back() -> None:
    graph = runtime_graph()
    assert "redfl.runtime.host" in graph and "redfl.runtime.protocol" in graph
    assert cycle(graph) is None


def test_runners_reach_their_host_through_the_protocol_only() -> None:
    graph = runtime_graph()
    runners = [name for name in graph if name.endswith("_runner")]
    assert len(runners) >= 4
    assert [r for r in runners if "redfl.runtime.host" in graph[r]] == []


def test_no_runtime_module_imports_the_root_package_or_a_layer_above() -> None:
    found = [
        (path.name, name)
        for path in sorted(RUNTIME.glob("*.py"))
        for name in sorted(imports_of(path))
        if above(name)
    ]
    assert found == []
