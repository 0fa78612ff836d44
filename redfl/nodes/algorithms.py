"""The decentralised algorithms by name (:data:`ALGORITHMS`, ``topology.algorithm``): the
node base class each needs.

A node class named by ``client.target`` must subclass the base its algorithm registers;
``schemas`` in the metadata, when present, limits the graph schemas the algorithm runs on.
"""

from __future__ import annotations

from typing import Any

from redfl.core.registry import Registry
from redfl.nodes.decentralized import DSGDNode, GossipNode, RingSequentialNode

ALGORITHMS: Registry[type[Any]] = Registry("algorithm")
"""Decentralised algorithms by ``topology.algorithm``: the abstract node base class (a
:class:`~redfl.nodes.decentralized.DecentralizedNode` subclass) that a node class named by
``client.target`` must subclass."""

ALGORITHMS.register("gossip", GossipNode, description="gossip averaging of the node models")
ALGORITHMS.register("dsgd", DSGDNode, description="decentralised SGD: local step, then mixing")
ALGORITHMS.register(
    "ring_sequential",
    RingSequentialNode,
    description="one model passed around a ring, trained by each node in turn",
    schemas=("ring", "custom"),
    needs="a ring",
)
