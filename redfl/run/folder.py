"""Run folders: a new folder per run, ``summary.json`` and ``model.safetensors`` (safetensors with
JSON metadata, never pickle)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from redfl.core.arrays import Parameters


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create ``root/<name>-<utc time>-<random>`` and return it."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{name}-{stamp}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def save_parameters(path: str | Path, parameters: Parameters, metadata: dict[str, Any]) -> None:
    """Write ``parameters`` as safetensors with ``metadata`` stored as JSON (no pickle)."""
    arrays = {k: np.ascontiguousarray(v) for k, v in parameters.items()}
    save_file(arrays, str(path), metadata={"redfl": json.dumps(metadata)})


def load_parameters(path: str | Path) -> tuple[Parameters, dict[str, Any]]:
    """Read a model file written by :func:`save_parameters`: (parameters, metadata)."""
    with safe_open(str(path), framework="numpy") as handle:
        raw = (handle.metadata() or {}).get("redfl", "{}")
        parameters = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    return parameters, json.loads(raw)


def write_summary(path: str | Path, summary: dict[str, Any]) -> None:
    """Write ``summary.json`` (pretty, sorted keys)."""
    Path(path).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
