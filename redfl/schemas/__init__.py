"""Protocols: who talks to whom, and when."""

from redfl.schemas.base import Federation, virtual_nodes
from redfl.schemas.callbacks import Callback
from redfl.schemas.decentralized import DecentralizedFederation
from redfl.schemas.graph import GraphFederation
from redfl.schemas.hierarchical import HierarchicalFederation
from redfl.schemas.named import (
    CustomFederation,
    KConnectFederation,
    MeshFederation,
    RingFederation,
)
from redfl.schemas.star import StarFederation

__all__ = [
    "Callback",
    "CustomFederation",
    "DecentralizedFederation",
    "Federation",
    "GraphFederation",
    "HierarchicalFederation",
    "KConnectFederation",
    "MeshFederation",
    "RingFederation",
    "StarFederation",
    "virtual_nodes",
]
