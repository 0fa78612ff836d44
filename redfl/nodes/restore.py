"""Putting a decentralised node back to a state it published (rollback after a worker loss).

After each round a :class:`~redfl.nodes.decentralized.DecentralizedNode` publishes
``round``, ``parameters``, ``weight`` and its :meth:`extra_state`. When a worker is lost,
the federation rolls every node back to the last round all of them completed: each node is
built afresh, runs ``begin()`` (mixing weights, neighbour exchanges) and then takes back
that round's published state here. A node that keeps more state than it publishes must
return it from ``extra_state`` (as attributes of the same names) to be restored exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from redfl.core.arrays import copy_parameters

if TYPE_CHECKING:
    from redfl.nodes.decentralized import DecentralizedNode


def restore(node: DecentralizedNode, state: Mapping[str, Any]) -> None:
    """Set ``node``'s round, parameters, weight and extra state from ``state``.

    Raises
    ------
    KeyError
        If ``state`` lacks ``round``, ``parameters``, ``weight`` or an extra-state key.
    """
    node.rounds_done = int(state["round"])
    node.parameters = copy_parameters(state["parameters"])
    node.share = float(state["weight"])
    for name in node.extra_state():
        setattr(node, name, copy.deepcopy(state[name]))
