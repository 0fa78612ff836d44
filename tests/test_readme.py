"""Every Python block of the README runs as written (from the repository root)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"^```python\n(.*?)^```", (REPO / "README.md").read_text(), re.S | re.M)


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(
    index: int, ray_session: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.chdir(REPO)
    namespace: dict[str, Any] = {"__name__": "__main__"}  # classes pickle by value to workers
    exec(compile(BLOCKS[index], f"README.md python block {index + 1}", "exec"), namespace)
