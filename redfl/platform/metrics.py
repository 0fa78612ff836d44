"""Prometheus metrics of the platform, in a registry of the app's own.

HTTP requests (by method, route template and status) and their latency are recorded by the
request middleware; runs by status are read from the store when scraped; rounds completed,
client failures and round seconds are fed by whatever executes runs, through
:meth:`PlatformMetrics.record_round` and :meth:`PlatformMetrics.record_client_failures`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROUND_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class _RunsByStatus(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("redfl_runs", "Runs by status.", labels=["status"])
        for status, count in self.counts().items():
            family.add_metric([status], count)
        yield family


class PlatformMetrics:
    """The app's metrics; ``runs_by_status`` is called at each scrape."""

    def __init__(self, runs_by_status: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "redfl_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "redfl_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rounds = Counter(
            "redfl_rounds_completed", "Rounds completed by runs.", registry=self.registry
        )
        self.client_failures = Counter(
            "redfl_client_failures", "Client failures recorded by runs.", registry=self.registry
        )
        self.round_seconds = Histogram(
            "redfl_round_seconds",
            "Duration of completed rounds.",
            buckets=ROUND_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_RunsByStatus(runs_by_status))

    def record_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one HTTP request and observe its latency."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def record_round(self, seconds: float) -> None:
        """Count one completed round of a run and observe how long it took."""
        self.rounds.inc()
        self.round_seconds.observe(seconds)

    def record_client_failures(self, count: int = 1) -> None:
        """Count ``count`` client failures of a run."""
        self.client_failures.inc(count)

    def exposition(self) -> bytes:
        """Everything, in the Prometheus text format."""
        return generate_latest(self.registry)
