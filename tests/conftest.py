"""Shared fixtures: one real Ray instance for the whole session."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent

# No test joins a warm head the developer may keep (`redfl head start`): runs start their own
# embedded Ray instance, or the cluster or head a test starts itself.
os.environ["REDFL_HEAD_DIR"] = str(TESTS / ".no-warm-head")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """Start Ray once (4 logical CPUs, no dashboard); Ray workers can import tests/*."""
    import ray

    paths = [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=4, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()
