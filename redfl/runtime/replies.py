"""What workers send back to the driver: fit and evaluate batches, round totals, failures.

Plain dataclasses (no Ray): a reply stays small whatever the number of clients, because
metrics and, for weighted-sum strategies, updates arrive folded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redfl.algorithms.strategy import ClientUpdate
from redfl.core.arrays import WeightedSum
from redfl.core.result import Failure


@dataclass
class FitBatch:
    """What a worker returns for one round's fit of its clients.

    ``total`` is the partial weighted sum of the successful updates (weighted-sum
    strategies); otherwise ``updates`` holds them one by one. Client metrics come folded
    too: ``metric_sums[k]`` is the example-weighted sum of metric ``k`` over the clients
    that reported it, ``metric_examples[k]`` their examples; so the reply stays small
    whatever the number of clients.
    """

    total: WeightedSum | None
    updates: list[ClientUpdate] = field(default_factory=list)
    succeeded: list[str] = field(default_factory=list)
    metric_sums: dict[str, float] = field(default_factory=dict)
    metric_examples: dict[str, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    """Counters summed over clients under the update policy (e.g. ``unclipped``)."""
    segment_totals: list[WeightedSum] = field(default_factory=list)
    segments_run: int = 0

    def add_metrics(self, metrics: dict[str, float], count: int) -> None:
        """Fold one client's metrics, weighted by its examples."""
        for name, value in metrics.items():
            self.metric_sums[name] = self.metric_sums.get(name, 0.0) + count * value
            self.metric_examples[name] = self.metric_examples.get(name, 0) + count

    def absorb(self, other: FitBatch) -> None:
        """Fold another batch's successes and metric sums into this one."""
        self.succeeded.extend(other.succeeded)
        for name, value in other.metric_sums.items():
            self.metric_sums[name] = self.metric_sums.get(name, 0.0) + value
            self.metric_examples[name] = (
                self.metric_examples.get(name, 0) + other.metric_examples[name]
            )
        for name, value in other.stats.items():
            self.stats[name] = self.stats.get(name, 0.0) + value


@dataclass(frozen=True)
class WorkerProbe:
    """A worker's answer to a probe: its process id, the client it runs and the piece of
    its batch (a subtree of a hierarchy) it folds, if any.

    ``elapsed`` is how long ``node_id`` has been running and ``piece_elapsed`` how long
    piece ``piece`` (its position in the running request) has, in seconds (measured on the
    worker, so clocks of different machines never meet).
    """

    pid: int
    node_id: str | None
    elapsed: float
    piece: int | None = None
    piece_elapsed: float = 0.0


@dataclass
class EvaluateBatch:
    """Per-client (id, loss, examples, metrics) of an evaluation, plus failures."""

    reports: list[tuple[str, float, int, dict[str, float]]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


@dataclass
class RoundTotals:
    """Sums of the metrics that nodes reported for one round, and how many reported.

    ``time`` (when a node's round ended) is kept as the latest, not summed.
    """

    nodes: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    ended: float = 0.0

    def add(self, metrics: dict[str, float]) -> None:
        """Fold one node's report."""
        self.nodes += 1
        for name, value in metrics.items():
            if name == "time":
                self.ended = max(self.ended, float(value))
                continue
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
            self.counts[name] = self.counts.get(name, 0) + 1

    def merge(self, other: RoundTotals) -> None:
        """Fold another worker's totals for the same round."""
        self.nodes += other.nodes
        self.ended = max(self.ended, other.ended)
        for name, value in other.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + other.counts[name]

    def copy(self) -> RoundTotals:
        """An independent copy."""
        return RoundTotals(self.nodes, dict(self.sums), dict(self.counts), self.ended)


class NodeFailed(RuntimeError):
    """A node's ``train()`` raised; carries the node id and the traceback text."""

    def __init__(self, node_id: str, trace: str) -> None:
        super().__init__(f"node {node_id!r} failed:\n{trace}")
        self.node_id = node_id
        self.trace = trace

    def __reduce__(self) -> tuple[Any, ...]:
        return (NodeFailed, (self.node_id, self.trace))
