"""A decentralised round's record, from the metric totals the nodes reported."""

from __future__ import annotations

from redfl.core.result import RoundRecord
from redfl.runtime.replies import RoundTotals

__all__ = ["METRIC_NAMES", "round_record"]

METRIC_NAMES = {"loss": "fit_loss", "accuracy": "test_accuracy"}
"""Node report names renamed in a record's ``metrics``, so that each name means the same in
every schema: ``fit_loss`` is a training loss (the record's ``train_loss``), ``test_loss``
and ``test_accuracy`` a node's evaluation of its own model (the record's ``loss`` and
``accuracy``)."""


def round_record(rnd: int, totals: RoundTotals, num_nodes: int, previous: float) -> RoundRecord:
    """A round's record: each metric averaged over the nodes that reported it.

    ``loss`` in a node report is its training loss, ``test_loss`` and ``accuracy`` its
    evaluation; ``seconds`` runs from ``previous`` to the end of the round's last node.
    """
    means = {name: totals.sums[name] / totals.counts[name] for name in sorted(totals.sums)}
    metrics = {METRIC_NAMES.get(name, name): value for name, value in means.items()}
    return RoundRecord(
        rnd,
        num_nodes,
        totals.nodes,
        num_nodes - totals.nodes,
        max(0.0, totals.ended - previous),
        means.get("loss"),
        means.get("test_loss"),
        means.get("accuracy"),
        metrics,
    )
