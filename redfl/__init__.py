"""redfl: federated learning on Ray.

Describe a federation (nodes, roles, topology, strategy, resources) and run it on the
embedded Ray instance, a Ray cluster, or in-process with ``runtime="local"``.

The names below are the user's vocabulary; each is imported from its module on first use
(PEP 562), so ``import redfl.core.arrays`` (or ``redfl.edge.tokens``) loads no runtime,
schema or run module. Everything else lives in its subpackage: strategy authors' types in
:mod:`redfl.algorithms`, attacks in :mod:`redfl.attacks`, the accountant in
:mod:`redfl.privacy`, every event class in :mod:`redfl.core.events`, the runtime's types
in :mod:`redfl.runtime`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_HOMES: dict[str, str] = {
    # one way to run a config
    "run": "redfl.run.api",
    "RunOutcome": "redfl.run.api",
    "tune": "redfl.run.tuning",
    "TuneOutcome": "redfl.run.tuning",
    "FederationConfig": "redfl.run.config",
    "load_config": "redfl.run.config",
    "ConfigError": "redfl.core.config",
    # federations (schemas)
    "StarFederation": "redfl.schemas.star",
    "HierarchicalFederation": "redfl.schemas.hierarchical",
    "DecentralizedFederation": "redfl.schemas.decentralized",
    "RingFederation": "redfl.schemas.named",
    "MeshFederation": "redfl.schemas.named",
    "KConnectFederation": "redfl.schemas.named",
    "CustomFederation": "redfl.schemas.named",
    "GraphFederation": "redfl.schemas.graph",
    "virtual_nodes": "redfl.schemas.base",
    "Callback": "redfl.schemas.callbacks",
    # what users subclass and what their code receives and returns
    "Client": "redfl.nodes.client",
    "FederatedNode": "redfl.nodes.node",
    "DecentralizedNode": "redfl.nodes.decentralized",
    "GossipNode": "redfl.nodes.decentralized",
    "DSGDNode": "redfl.nodes.decentralized",
    "RingSequentialNode": "redfl.nodes.decentralized",
    "Instructions": "redfl.core.instructions",
    "FitResult": "redfl.core.result",
    "EvaluateResult": "redfl.core.result",
    "Parameters": "redfl.core.arrays",
    # strategies and privacy
    "Strategy": "redfl.algorithms.strategy",
    "FedAvg": "redfl.algorithms.fedavg",
    "FedAvgM": "redfl.algorithms.fedavgm",
    "FedProx": "redfl.algorithms.fedprox",
    "FedAdam": "redfl.algorithms.fedopt",
    "FedYogi": "redfl.algorithms.fedopt",
    "FedAdagrad": "redfl.algorithms.fedopt",
    "QFedAvg": "redfl.algorithms.qfedavg",
    "FedMedian": "redfl.algorithms.robust",
    "FedTrimmedAvg": "redfl.algorithms.robust",
    "Krum": "redfl.algorithms.robust",
    "MultiKrum": "redfl.algorithms.robust",
    "Bulyan": "redfl.algorithms.robust",
    "DPFixedClipping": "redfl.privacy.clipping",
    "DPAdaptiveClipping": "redfl.privacy.clipping",
    "SecureAggregationConfig": "redfl.privacy.secagg.table",
    # results and events
    "FederationResult": "redfl.core.result",
    "RoundRecord": "redfl.core.result",
    "Failure": "redfl.core.result",
    "FederationError": "redfl.core.result",
    "Event": "redfl.core.events",
    "RoundFinished": "redfl.core.events",
    # topology and resources
    "Topology": "redfl.topology.graph",
    "TopologyError": "redfl.topology.validate",
    "ResourcesConfig": "redfl.runtime.resources",
    "ResourceError": "redfl.runtime.resources",
    "remote": "redfl.runtime.remote",
}

__all__ = [
    "Bulyan",
    "Callback",
    "Client",
    "ConfigError",
    "CustomFederation",
    "DecentralizedFederation",
    "DecentralizedNode",
    "DPAdaptiveClipping",
    "DPFixedClipping",
    "DSGDNode",
    "EvaluateResult",
    "Event",
    "Failure",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FederatedNode",
    "FederationConfig",
    "FederationError",
    "FederationResult",
    "FedMedian",
    "FedProx",
    "FedTrimmedAvg",
    "FedYogi",
    "FitResult",
    "GossipNode",
    "GraphFederation",
    "HierarchicalFederation",
    "Instructions",
    "KConnectFederation",
    "Krum",
    "load_config",
    "MeshFederation",
    "MultiKrum",
    "Parameters",
    "QFedAvg",
    "remote",
    "ResourceError",
    "ResourcesConfig",
    "RingFederation",
    "RingSequentialNode",
    "RoundFinished",
    "RoundRecord",
    "run",
    "RunOutcome",
    "SecureAggregationConfig",
    "StarFederation",
    "Strategy",
    "Topology",
    "TopologyError",
    "tune",
    "TuneOutcome",
    "virtual_nodes",
]
"""The user's vocabulary (the keys of :data:`_HOMES`)."""


# ``redfl.run`` names both the user's verb (the function) and the subpackage that holds it.
# Import the subpackage now (its ``__init__`` imports nothing), which sets this module's
# attribute ``run`` to it, and drop that attribute: ``redfl.run`` is then the function, found
# by ``__getattr__`` below, and importing ``redfl.run.<module>`` later does not set it again.
import redfl.run as _run_layer  # noqa: E402, F401

globals().pop("run")


def __getattr__(name: str) -> Any:
    """Import ``name`` from its module on first use (and keep it here)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'redfl' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


if TYPE_CHECKING:
    from redfl.algorithms.fedavg import FedAvg
    from redfl.algorithms.fedavgm import FedAvgM
    from redfl.algorithms.fedopt import FedAdagrad, FedAdam, FedYogi
    from redfl.algorithms.fedprox import FedProx
    from redfl.algorithms.qfedavg import QFedAvg
    from redfl.algorithms.robust import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum
    from redfl.algorithms.strategy import Strategy
    from redfl.core.arrays import Parameters
    from redfl.core.config import ConfigError
    from redfl.core.events import Event, RoundFinished
    from redfl.core.instructions import Instructions
    from redfl.core.result import (
        EvaluateResult,
        Failure,
        FederationError,
        FederationResult,
        FitResult,
        RoundRecord,
    )
    from redfl.nodes.client import Client
    from redfl.nodes.decentralized import (
        DecentralizedNode,
        DSGDNode,
        GossipNode,
        RingSequentialNode,
    )
    from redfl.nodes.node import FederatedNode
    from redfl.privacy.clipping import DPAdaptiveClipping, DPFixedClipping
    from redfl.privacy.secagg.table import SecureAggregationConfig
    from redfl.run.api import RunOutcome, run
    from redfl.run.config import FederationConfig, load_config
    from redfl.run.tuning import TuneOutcome, tune
    from redfl.runtime.remote import remote
    from redfl.runtime.resources import ResourceError, ResourcesConfig
    from redfl.schemas.base import virtual_nodes
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
    from redfl.topology.graph import Topology
    from redfl.topology.validate import TopologyError
