"""Latency samples of the edge services, summarised for their ``GET /stats`` routes."""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["Samples", "summary"]

Samples = deque[float]
"""The most recent durations of one kind, in seconds."""


def summary(values: Samples) -> dict[str, float]:
    """``count``, ``p50_ms`` and ``p99_ms`` of ``values`` (seconds; percentiles 0 when empty).

    >>> summary(deque([0.003, 0.001, 0.002]))["p50_ms"]
    2.0
    """
    p50, p99 = np.percentile(values, [50, 99]) * 1e3 if values else (0.0, 0.0)
    return {"count": len(values), "p50_ms": float(p50), "p99_ms": float(p99)}
