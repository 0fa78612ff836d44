"""redfl: federated learning on Ray.

Describe a federation (nodes, roles, topology, strategy, resources) and run it on the
embedded Ray instance, a Ray cluster, or in-process with ``runtime="local"``.
"""

from redfl.algorithms import ClientUpdate, FedAvg, Strategy
from redfl.core.arrays import Parameters, WeightedSum
from redfl.core.config import ConfigError, FederationConfig, ResourcesConfig, load_config
from redfl.core.message import Message
from redfl.core.result import Failure, FederationError, FederationResult, RoundRecord
from redfl.nodes import (
    Client,
    DecentralizedNode,
    DSGDNode,
    FederatedNode,
    GossipNode,
    RingSequentialNode,
)
from redfl.runtime import NotNeighbourError, ResourceError, TopologyManager, VirtualNode, remote
from redfl.schemas import (
    Callback,
    CustomFederation,
    DecentralizedFederation,
    Federation,
    GraphFederation,
    KConnectFederation,
    MeshFederation,
    RingFederation,
    StarFederation,
    virtual_nodes,
)
from redfl.topology import Topology, TopologyError

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "Client",
    "ClientUpdate",
    "ConfigError",
    "FedAvg",
    "FederatedNode",
    "Federation",
    "FederationConfig",
    "FederationError",
    "FederationResult",
    "Failure",
    "GraphFederation",
    "Message",
    "NotNeighbourError",
    "Parameters",
    "ResourceError",
    "ResourcesConfig",
    "RoundRecord",
    "StarFederation",
    "Strategy",
    "Topology",
    "TopologyManager",
    "VirtualNode",
    "WeightedSum",
    "load_config",
    "remote",
    "virtual_nodes",
    "CustomFederation",
    "DSGDNode",
    "DecentralizedFederation",
    "DecentralizedNode",
    "GossipNode",
    "KConnectFederation",
    "MeshFederation",
    "RingFederation",
    "RingSequentialNode",
    "TopologyError",
]
