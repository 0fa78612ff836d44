"""redfl: federated learning on Ray.

Describe a federation (nodes, roles, topology, strategy, resources) and run it on the
embedded Ray instance, a Ray cluster, or in-process with ``runtime="local"``.
"""

from redfl.algorithms import (
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
)
from redfl.attacks import Attacked, GaussianNoise, LabelFlip, LittleIsEnough, SignFlip
from redfl.core.arrays import Parameters
from redfl.core.config import ConfigError, FederationConfig, ResourcesConfig, load_config
from redfl.core.events import (
    CheckpointSaved,
    ClientsProgress,
    Event,
    FailureRecorded,
    RoundFinished,
    RoundStarted,
    RunCancelled,
    RunFailed,
    RunFinished,
    RunStarted,
    WorkerRestarted,
)
from redfl.core.instructions import Instructions
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
from redfl.run import RunOutcome, run
from redfl.run.tuning import TuneOutcome, tune
from redfl.runtime import NotNeighbourError, ResourceError, VirtualNode, remote
from redfl.schemas import (
    Callback,
    CustomFederation,
    DecentralizedFederation,
    Federation,
    GraphFederation,
    HierarchicalFederation,
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
    "Attacked",
    "Bulyan",
    "Callback",
    "Checkpoint",
    "CheckpointSaved",
    "Client",
    "ClientsProgress",
    "ClientUpdate",
    "ConfigError",
    "CustomFederation",
    "DecentralizedFederation",
    "DecentralizedNode",
    "DPAdaptiveClipping",
    "DPFixedClipping",
    "DSGDNode",
    "Event",
    "Failure",
    "FailureRecorded",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FederatedNode",
    "Federation",
    "FederationConfig",
    "FederationError",
    "FederationResult",
    "FedMedian",
    "FedProx",
    "FedTrimmedAvg",
    "FedYogi",
    "GaussianNoise",
    "GossipNode",
    "GraphFederation",
    "HierarchicalFederation",
    "Instructions",
    "KConnectFederation",
    "Krum",
    "LabelFlip",
    "LittleIsEnough",
    "load_config",
    "MeshFederation",
    "Message",
    "MultiKrum",
    "NotNeighbourError",
    "ParameterError",
    "Parameters",
    "QFedAvg",
    "RdpAccountant",
    "remote",
    "ResourceError",
    "ResourcesConfig",
    "RingFederation",
    "RingSequentialNode",
    "RoundFinished",
    "RoundRecord",
    "RoundStarted",
    "run",
    "RunCancelled",
    "RunFailed",
    "RunFinished",
    "RunOutcome",
    "RunStarted",
    "SignFlip",
    "StarFederation",
    "Strategy",
    "StrategyWrapper",
    "Topology",
    "TopologyError",
    "tune",
    "TuneOutcome",
    "virtual_nodes",
    "VirtualNode",
    "WorkerRestarted",
]
