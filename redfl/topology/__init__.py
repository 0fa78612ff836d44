"""Topology graphs (who may send to whom) and relay trees (hierarchies). No Ray."""

from redfl.topology.assign import Assignment, assign_clients, lcp_of
from redfl.topology.builders import custom, k_connect, mesh, ring, star
from redfl.topology.graph import Topology
from redfl.topology.tree import (
    CLI_RANGES,
    RelayTree,
    Site,
    SiteKind,
    TreeCounts,
    TreeError,
    TreeRangeError,
    check_shape,
    relay_tree,
    site_resource,
    tree_counts,
)
from redfl.topology.tree_file import TreeFile, load_tree, parse_tree, save_tree
from redfl.topology.validate import TopologyError, check_topology

__all__ = [
    "CLI_RANGES",
    "Assignment",
    "RelayTree",
    "Site",
    "SiteKind",
    "Topology",
    "TopologyError",
    "TreeCounts",
    "TreeError",
    "TreeFile",
    "TreeRangeError",
    "assign_clients",
    "check_shape",
    "check_topology",
    "custom",
    "k_connect",
    "lcp_of",
    "load_tree",
    "mesh",
    "parse_tree",
    "relay_tree",
    "ring",
    "save_tree",
    "site_resource",
    "star",
    "tree_counts",
]
