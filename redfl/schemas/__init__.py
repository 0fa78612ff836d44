"""Protocols: who talks to whom, and when.

Importing this package registers every shipped schema in :data:`SCHEMAS`.
"""

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
from redfl.schemas.registry import SCHEMAS
from redfl.schemas.star import StarFederation

__all__ = [
    "SCHEMAS",
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
