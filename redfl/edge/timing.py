"""Latency samples of the edge services, summarised for their ``GET /stats`` routes."""

from __future__ import annotations

from collections import deque

__all__ = ["Samples", "percentile", "summary"]

Samples = deque[float]
"""The most recent durations of one kind, in seconds."""


def percentile(values: deque[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``; 0 when empty.

    >>> percentile(deque([0.3, 0.1, 0.2]), 50)
    0.2
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def summary(values: deque[float]) -> dict[str, float]:
    """``count``, ``p50_ms`` and ``p99_ms`` of ``values`` (seconds)."""
    return {"count": len(values), **{f"p{q}_ms": percentile(values, q) * 1e3 for q in (50, 99)}}
