"""The package root is lazy: importing a low layer loads no layer above it; the root's names
are the user's vocabulary and each resolves to its home."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import redfl

HIGH = ("redfl.runtime", "redfl.schemas", "redfl.run.", "redfl.platform", "redfl.commands")


def loaded_after(statement: str) -> list[str]:
    """The redfl modules (and whether Ray) a fresh interpreter has after ``statement``."""
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in json.loads(out.stdout) if m.startswith(("redfl", "ray"))]


@pytest.mark.parametrize("module", ["redfl.core.arrays", "redfl.edge.tokens", "redfl.trust"])
def test_importing_a_low_module_loads_no_high_layer_and_no_ray(module: str) -> None:
    loaded = loaded_after(f"import {module}")
    assert module in loaded
    assert [m for m in loaded if m.startswith(HIGH) or m == "ray" or m.startswith("ray.")] == []
    # the root package and, for the name ``redfl.run``, the run layer's empty package
    assert {"redfl", "redfl.run"} <= set(loaded)


def test_core_arrays_loads_only_itself_and_the_root() -> None:
    assert loaded_after("import redfl.core.arrays") == [
        "redfl",
        "redfl.core",
        "redfl.core.arrays",
        "redfl.run",
    ]


def test_redfl_run_is_the_function_whatever_was_imported_before() -> None:
    loaded = loaded_after(
        "import redfl.run.config, redfl.run.api, redfl\nassert callable(redfl.run)"
    )
    assert "redfl.run.api" in loaded
    from redfl.run.api import run

    assert redfl.run is run


def test_every_exported_name_resolves_to_its_home_and_nothing_else_is_exported() -> None:
    homes = redfl._HOMES
    assert sorted(redfl.__all__) == sorted(homes)
    for name in redfl.__all__:
        assert getattr(redfl, name) is getattr(importlib.import_module(homes[name]), name)
    with pytest.raises(AttributeError, match="no attribute 'Checkpoint'"):
        _ = redfl.Checkpoint
