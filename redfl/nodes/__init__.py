"""The classes users subclass: :class:`FederatedNode` and the star :class:`Client`."""

from redfl.nodes.client import Client
from redfl.nodes.decentralized import (
    DecentralizedNode,
    DSGDNode,
    GossipNode,
    MixingNode,
    RingSequentialNode,
)
from redfl.nodes.node import FederatedNode, NodeContext, NodePort

__all__ = [
    "Client",
    "DSGDNode",
    "DecentralizedNode",
    "FederatedNode",
    "GossipNode",
    "MixingNode",
    "NodeContext",
    "NodePort",
    "RingSequentialNode",
]
