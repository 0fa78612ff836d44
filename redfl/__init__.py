"""redfl: federated learning on Ray.

Describe a federation (nodes, roles, topology, strategy, resources) and run it on the
embedded Ray instance, a Ray cluster, or in-process with ``runtime="local"``.
"""

from redfl.algorithms import (
    STRATEGIES,
    Bulyan,
    ClientUpdate,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    ParameterError,
    QFedAvg,
    Strategy,
    StrategyWrapper,
    make_strategy,
)
from redfl.attacks import Attacked, GaussianNoise, LabelFlip, LittleIsEnough, SignFlip
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
from redfl.privacy import DPAdaptiveClipping, DPFixedClipping, RdpAccountant
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
from redfl.schemas.checkpoint import Checkpoint
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
    # strategies, privacy, attacks
    "STRATEGIES",
    "Attacked",
    "Bulyan",
    "Checkpoint",
    "DPAdaptiveClipping",
    "DPFixedClipping",
    "FedAdagrad",
    "FedAdam",
    "FedAvgM",
    "FedMedian",
    "FedProx",
    "FedTrimmedAvg",
    "FedYogi",
    "GaussianNoise",
    "Krum",
    "LabelFlip",
    "LittleIsEnough",
    "MultiKrum",
    "ParameterError",
    "QFedAvg",
    "RdpAccountant",
    "SignFlip",
    "StrategyWrapper",
    "make_strategy",
]
