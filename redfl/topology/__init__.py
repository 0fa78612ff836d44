"""Topology graphs: who may send to whom. No Ray."""

from redfl.topology.builders import custom, k_connect, mesh, ring, star
from redfl.topology.graph import Topology
from redfl.topology.validate import TopologyError, check_topology

__all__ = [
    "Topology",
    "TopologyError",
    "check_topology",
    "custom",
    "k_connect",
    "mesh",
    "ring",
    "star",
]
