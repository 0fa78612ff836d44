"""Topology graphs: who may send to whom. No Ray."""

from redfl.topology.graph import Topology

__all__ = ["Topology"]
