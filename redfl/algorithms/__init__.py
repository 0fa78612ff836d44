"""Server-side math: strategies and aggregation. No Ray."""

from redfl.algorithms.fedavg import FedAvg
from redfl.algorithms.strategy import ClientUpdate, Strategy, sample_clients

__all__ = ["ClientUpdate", "FedAvg", "Strategy", "sample_clients"]
