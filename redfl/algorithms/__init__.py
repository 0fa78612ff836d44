"""Server-side math: strategies and aggregation. No Ray."""

from redfl.algorithms.fedavg import FedAvg
from redfl.algorithms.fedavgm import FedAvgM
from redfl.algorithms.fedopt import FedAdagrad, FedAdam, FedOpt, FedYogi
from redfl.algorithms.fedprox import FedProx
from redfl.algorithms.qfedavg import QFedAvg
from redfl.algorithms.registry import STRATEGIES, StrategySpec, make_strategy
from redfl.algorithms.robust import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum
from redfl.algorithms.strategy import (
    ClientUpdate,
    ParameterError,
    RoundOutcome,
    Strategy,
    sample_clients,
)
from redfl.algorithms.updates import UpdatePolicy
from redfl.algorithms.wrapper import StrategyWrapper

__all__ = [
    "STRATEGIES",
    "Bulyan",
    "ClientUpdate",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedMedian",
    "FedOpt",
    "FedProx",
    "FedTrimmedAvg",
    "FedYogi",
    "Krum",
    "MultiKrum",
    "ParameterError",
    "QFedAvg",
    "RoundOutcome",
    "Strategy",
    "StrategySpec",
    "StrategyWrapper",
    "UpdatePolicy",
    "make_strategy",
    "sample_clients",
]
