"""Registers the shipped decentralised algorithms (``topology.algorithm``) and their bases.

A node class named by ``client.target`` must subclass the base its algorithm registers;
``schemas`` in the metadata, when present, limits the graph schemas the algorithm runs on.
"""

from __future__ import annotations

from redfl.core.registries import ALGORITHMS
from redfl.nodes.decentralized import DSGDNode, GossipNode, RingSequentialNode

ALGORITHMS.register("gossip", GossipNode, description="gossip averaging of the node models")
ALGORITHMS.register("dsgd", DSGDNode, description="decentralised SGD: local step, then mixing")
ALGORITHMS.register(
    "ring_sequential",
    RingSequentialNode,
    description="one model passed around a ring, trained by each node in turn",
    schemas=("ring", "custom"),
    needs="a ring",
)
