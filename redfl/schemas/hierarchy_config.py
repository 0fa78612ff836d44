"""The ``[topology]`` table of a hierarchical config, turned into the arguments of
:class:`~redfl.schemas.hierarchical.HierarchicalFederation`.

The tree comes from ``tree_file`` (``redfl tree``'s ``tree.json``; a relative path is read
beside the config file) or is built from ``depth``, ``width`` and ``lcps``. Every error is a
:class:`~redfl.core.config.ConfigError` naming the ``topology.*`` field.
"""

from __future__ import annotations

from typing import Any

from redfl.algorithms.hierarchy import make_leaf_strategy
from redfl.algorithms.strategy import ParameterError, Strategy
from redfl.core.config import ConfigError, FederationConfig
from redfl.topology.tree import RelayTree, relay_tree
from redfl.topology.tree_file import load_tree
from redfl.topology.tree_shape import TreeError


def tree_from_config(config: FederationConfig) -> RelayTree:
    """The relay tree of ``[topology]``.

    Raises
    ------
    ConfigError
        For a tree file that is missing or not a relay tree, or a bad shape.
    """
    t = config.topology
    try:
        if t.tree_file is not None:
            return load_tree(t.tree_file).tree
        assert t.depth is not None and t.width is not None and t.lcps is not None
        return relay_tree(t.depth, t.width, t.lcps)
    except TreeError as error:
        field = "tree_file" if t.tree_file is not None else "depth/width/lcps"
        raise ConfigError(f"invalid config: topology.{field}: {error}") from None


def leaf_from_config(config: FederationConfig) -> Strategy | None:
    """The ``leaf_strategy`` with its ``leaf_params``, or ``None``.

    Raises
    ------
    ConfigError
        For a strategy that cannot run at the leaves or a bad parameter.
    """
    t = config.topology
    if t.leaf_strategy is None:
        if t.leaf_params:
            raise ConfigError("invalid config: topology.leaf_params: given without leaf_strategy")
        return None
    try:
        return make_leaf_strategy(t.leaf_strategy, **t.leaf_params)
    except ParameterError as error:
        where = "leaf_strategy" if error.parameter == "leaf_strategy" else "leaf_params"
        key = "" if where == "leaf_strategy" else f".{error.parameter}"
        raise ConfigError(f"invalid config: topology.{where}{key}: {error.detail}") from None


def hierarchy_arguments(config: FederationConfig) -> dict[str, Any]:
    """The keyword arguments a :class:`HierarchicalFederation` takes beyond the star's.

    Raises
    ------
    ConfigError
        Naming the ``topology.*`` field at fault (including a ``clients_per_lcp`` that does
        not multiply to ``client.num_clients``).
    """
    t = config.topology
    tree = tree_from_config(config)
    lcps = len(tree.lcps)
    clients = config.client.num_clients
    if t.clients_per_lcp is not None and t.clients_per_lcp * lcps != clients:
        raise ConfigError(
            f"invalid config: topology.clients_per_lcp: {t.clients_per_lcp} x {lcps} LCPs = "
            f"{t.clients_per_lcp * lcps} clients, but client.num_clients is {clients}"
        )
    return {
        "tree": tree,
        "clients_per_lcp": t.clients_per_lcp,
        "leaf_strategy": leaf_from_config(config),
        "min_coverage": 0.5 if t.min_coverage is None else t.min_coverage,
        "pin": tuple(t.pin),
    }
