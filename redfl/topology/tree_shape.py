"""The shape of a relay tree: its parameters, their ranges, and the site counts. No tree built.

A relay tree (seed 003, NVIDIA FLARE's ``tree_prov``) has ``depth`` tiers of relays, each
relay with ``width`` child relays (tier ``k`` holds ``width**k`` relays), one aggregator
attached to every relay (none with ``lcp_only``) and ``clients`` leaf client processes (LCPs)
under every leaf relay. :func:`tree_counts` gives the number of sites of each kind from these
four numbers alone, exactly (Python integers), whatever the size:

- relays: ``sum(width**k for k in 1..depth)``, of which ``width**depth`` are leaves;
- clients: one aggregator per relay (0 with ``lcp_only``) plus ``clients * width**depth`` LCPs;
- total sites: relays + clients + 1 (the server).

Ranges. The ``redfl tree`` command takes depth 1..5, width 2..9, clients 2..9
(:data:`CLI_RANGES`, as NVIDIA FLARE's tool). The data functions accept the wider
:data:`DATA_RANGES` (every value >= 1, so tests can build chains of width 1 or single-LCP
leaves); a tree is only *built* up to :data:`MAX_BUILT_SITES` sites, while counting has no
limit.

Examples
--------
>>> tree_counts(2, 2, 3).as_dict()["total_sites"]
25
>>> tree_counts(5, 9, 9, lcp_only=True).clients_total
531441
>>> check_shape(2, 12, 3, CLI_RANGES)
Traceback (most recent call last):
...
redfl.topology.tree_shape.TreeRangeError: width 12 is out of range 2..9
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

MAX_BUILT_SITES = 1_000_000
"""The largest tree :func:`~redfl.topology.tree.relay_tree` builds (counting has no limit)."""


class TreeError(ValueError):
    """A tree parameter, site, assignment or tree file is wrong; the message names it."""


class TreeRangeError(TreeError):
    """A shape parameter is out of its range.

    Parameters
    ----------
    parameter:
        The parameter's name (``depth``, ``width``, ``clients``, ...).
    value:
        The value given.
    low, high:
        The allowed range, inclusive; ``high`` is ``None`` for no upper bound.
    """

    def __init__(self, parameter: str, value: int, low: int, high: int | None) -> None:
        self.parameter, self.value, self.low, self.high = parameter, value, low, high
        self.allowed = f"{low}..{high}" if high is not None else f"{low} or more"
        super().__init__(f"{parameter} {value} is out of range {self.allowed}")


@dataclass(frozen=True)
class Range:
    """An inclusive integer range; ``high`` ``None`` means unbounded."""

    low: int
    high: int | None = None

    def check(self, parameter: str, value: int) -> None:
        """Raise :class:`TreeRangeError` naming ``parameter`` unless ``value`` is in range."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise TreeError(f"{parameter} must be an integer, got {value!r}")
        if value < self.low or (self.high is not None and value > self.high):
            raise TreeRangeError(parameter, value, self.low, self.high)


CLI_RANGES: dict[str, Range] = {"depth": Range(1, 5), "width": Range(2, 9), "clients": Range(2, 9)}
"""The ranges ``redfl tree`` enforces (those of NVIDIA FLARE's tree tool)."""

DATA_RANGES: dict[str, Range] = {"depth": Range(1), "width": Range(1), "clients": Range(1)}
"""The ranges the data functions accept (wider, for tests and programmatic use)."""


def check_shape(
    depth: int, width: int, clients: int, ranges: dict[str, Range] | None = None
) -> None:
    """Check the three shape parameters against ``ranges`` (default :data:`DATA_RANGES`).

    Raises
    ------
    TreeRangeError
        For the first parameter out of range, in the order depth, width, clients.
    """
    limits = DATA_RANGES if ranges is None else ranges
    for name, value in (("depth", depth), ("width", width), ("clients", clients)):
        limits[name].check(name, value)


@dataclass(frozen=True)
class TreeCounts:
    """How many sites of each kind a relay tree has (see the module docstring)."""

    relays_leaf: int
    relays_nonleaf: int
    relays_total: int
    clients_leaf: int
    """LCPs."""
    clients_nonleaf: int
    """Aggregators: one per relay, none with ``lcp_only``."""
    clients_total: int
    total_sites: int
    """Relays, clients and the server."""

    def as_dict(self) -> dict[str, int]:
        """The counts by field name (the keys of ``redfl tree --analyze --json``)."""
        return asdict(self)


def tree_counts(depth: int, width: int, clients: int, lcp_only: bool = False) -> TreeCounts:
    """Count the sites of a relay tree without building it (exact for any size).

    Raises
    ------
    TreeRangeError
        If a parameter is outside :data:`DATA_RANGES`.

    Examples
    --------
    >>> c = tree_counts(2, 2, 3)
    >>> (c.relays_leaf, c.relays_nonleaf, c.relays_total)
    (4, 2, 6)
    >>> (c.clients_leaf, c.clients_nonleaf, c.clients_total, c.total_sites)
    (12, 6, 18, 25)
    """
    check_shape(depth, width, clients)
    leaf = width**depth
    relays = depth if width == 1 else (width ** (depth + 1) - width) // (width - 1)
    aggregators = 0 if lcp_only else relays
    lcps = clients * leaf
    return TreeCounts(
        relays_leaf=leaf,
        relays_nonleaf=relays - leaf,
        relays_total=relays,
        clients_leaf=lcps,
        clients_nonleaf=aggregators,
        clients_total=aggregators + lcps,
        total_sites=relays + aggregators + lcps + 1,
    )


def relay_name(path: tuple[int, ...]) -> str:
    """``relay-1-2`` for the path ``(1, 2)`` of child indices (from 1) below the server."""
    return "relay-" + "-".join(map(str, path))


def aggregator_name(path: tuple[int, ...]) -> str:
    """``agg-1-2``: the aggregator attached to relay ``relay-1-2``."""
    return "agg-" + "-".join(map(str, path))


def lcp_name(path: tuple[int, ...], index: int) -> str:
    """``lcp-1-2-3``: the ``index``-th (from 1) LCP under leaf relay ``relay-1-2``."""
    return "lcp-" + "-".join(map(str, (*path, index)))


SITE_RESOURCE_PREFIX = "redfl-site-"
"""Prefix of the custom Ray resource a machine advertises to host a site's subtree."""


def site_resource(name: str) -> str:
    """The custom Ray resource that pins the subtree of site ``name`` to a machine.

    A machine started with ``ray start --resources '{"redfl-site-agg-1": 1}'`` offers it, for
    the hierarchy runner (issue 11, part 3) to place the nodes of ``agg-1``'s subtree there.

    >>> site_resource("agg-1")
    'redfl-site-agg-1'
    """
    return SITE_RESOURCE_PREFIX + name
