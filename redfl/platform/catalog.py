"""What a web user may pick from: the registered strategies and the bundled example configs."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from redfl.algorithms.registry import STRATEGIES


@dataclass(frozen=True)
class Example:
    """A bundled example config: its name (file stem), first comment line and TOML text."""

    name: str
    description: str
    config: str


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def strategies() -> list[dict[str, Any]]:
    """Every registered strategy: name, class, paper, pre-aggregation and own parameters."""
    return [
        {
            "name": spec.name,
            "cls": spec.cls.__name__,
            "paper": spec.paper,
            "pre_aggregates": spec.pre_aggregates,
            "parameters": {k: _json_safe(v) for k, v in spec.parameters().items()},
        }
        for spec in STRATEGIES.values()
    ]


def examples() -> list[Example]:
    """The example configs shipped in ``redfl/platform/examples``, by name."""
    found = []
    for entry in resources.files("redfl.platform.examples").iterdir():
        if entry.name.endswith(".toml"):
            text = entry.read_text(encoding="utf-8")
            first = next((ln for ln in text.splitlines() if ln.startswith("#")), "")
            found.append(Example(entry.name[:-5], first.lstrip("# ").strip(), text))
    return sorted(found, key=lambda e: e.name)
