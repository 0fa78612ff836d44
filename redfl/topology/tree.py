"""Relay trees as data: the sites of a hierarchical federation and who reports to whom. No Ray.

:func:`relay_tree` builds the hierarchy NVIDIA FLARE's tree provisioning describes:

- ``depth`` tiers of relays, ``width`` children each: ``relay-1``, ``relay-2``, ...,
  ``relay-1-1``, ``relay-1-2``, ... (the path of child indices from 1); a top-tier relay's
  parent is the server, any other relay's parent is its parent relay;
- one aggregator per relay, ``agg-1-2`` for ``relay-1-2``, whose parent is the aggregator of
  the parent relay (top-tier aggregators report to the server);
- ``clients`` LCPs under every leaf relay, ``lcp-1-2-3`` the third under ``relay-1-2``,
  reporting to that relay's aggregator.

With ``lcp_only`` there are no aggregators: the LCPs report to the nearest ancestor that
aggregates, the server, while still connecting through their leaf relay
(:attr:`Site.relay`). The relays stay in the tree: they are the communication hierarchy.

``parent`` is the *reporting* link: the aggregation tree is the server, the aggregators and
the LCPs with their parents; relays form the communication tree beside it. A site's ``tier``
is the number of parent links between it and the server (server 0; ``relay-1-2`` and
``agg-1-2`` are tier 2; the LCPs of a depth-``d`` tree are tier ``d + 1``, or 1 with
``lcp_only``). Sites are listed tier by tier (each relay followed by its aggregator), the
LCPs last, and site ``i`` listens on port ``base_port + i``.

**The shape.** A relay tree (NVIDIA FLARE's ``tree_prov``) has ``depth`` tiers of relays, each
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
>>> tree = relay_tree(2, 2, 3)
>>> [s.name for s in tree.children("agg-1")]
['agg-1-1', 'agg-1-2']
>>> tree.path_to_root("lcp-1-2-3")
('lcp-1-2-3', 'agg-1-2', 'agg-1', 'server')
>>> tree.aggregation_order()[:3], tree.aggregation_order()[-3:]
(('lcp-1-1-1', 'lcp-1-1-2', 'lcp-1-1-3'), ('agg-1', 'agg-2', 'server'))
>>> tree_counts(2, 2, 3).as_dict()["total_sites"]
25
>>> tree_counts(5, 9, 9, lcp_only=True).clients_total
531441
>>> check_shape(2, 12, 3, CLI_RANGES)
Traceback (most recent call last):
...
redfl.topology.tree.TreeRangeError: width 12 is out of range 2..9
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Literal

# -- the shape: parameters, ranges, counts, names (no tree built) ------------------------

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
    the hierarchical schema to place the nodes of ``agg-1``'s subtree there (``pin``).

    >>> site_resource("agg-1")
    'redfl-site-agg-1'
    """
    return SITE_RESOURCE_PREFIX + name


# -- the tree ---------------------------------------------------------------------------

SiteKind = Literal["server", "relay", "aggregator", "lcp"]
"""What a site is (see the module docstring)."""

SITE_KINDS: tuple[SiteKind, ...] = ("server", "relay", "aggregator", "lcp")

AGGREGATING: frozenset[str] = frozenset({"server", "aggregator", "lcp"})
"""The kinds that fold partial sums (relays only carry messages)."""

DEFAULT_BASE_PORT = 9001
"""The server's port when none is given; site ``i`` gets ``base_port + i``."""

ALLOWED_PARENTS: dict[str, frozenset[str]] = {
    "relay": frozenset({"server", "relay"}),
    "aggregator": frozenset({"server", "aggregator"}),
    "lcp": frozenset({"server", "aggregator"}),
}


@dataclass(frozen=True)
class Site:
    """One site of a relay tree.

    Parameters
    ----------
    name:
        Stable, readable id: ``server``, ``relay-1-2``, ``agg-1-2``, ``lcp-1-2-3``.
    kind:
        ``server``, ``relay``, ``aggregator`` or ``lcp``.
    parent:
        The site it reports to (``None`` for the server).
    tier:
        Parent links between the site and the server (server 0).
    port:
        The port the site listens on.
    relay:
        For aggregators and LCPs, the relay they connect through (``None`` otherwise).
    """

    name: str
    kind: SiteKind
    parent: str | None
    tier: int
    port: int
    relay: str | None = None


@dataclass(frozen=True)
class RelayTree:
    """A built relay tree: its shape and its sites, checked on construction.

    Build one with :func:`relay_tree`; read and write ``tree.json`` with
    :mod:`redfl.topology.tree_file`.
    """

    depth: int
    width: int
    clients: int
    lcp_only: bool
    sites: tuple[Site, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)
    _children: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, int] = {}
        children: dict[str, list[str]] = {}
        ports: dict[int, str] = {}
        for position, site in enumerate(self.sites):
            _check_site(site, position, index, self.sites, ports)
            index[site.name] = position
            children[site.name] = []
            if site.parent is not None:
                children[site.parent].append(site.name)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_children", {k: tuple(v) for k, v in children.items()})

    def site(self, name: str) -> Site:
        """The site called ``name``; :class:`TreeError` if there is none."""
        position = self._index.get(name)
        if position is None:
            raise TreeError(f"no site {name!r} in the tree ({len(self.sites)} sites)")
        return self.sites[position]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def of_kind(self, kind: SiteKind) -> tuple[Site, ...]:
        """The sites of one kind, in site order."""
        return tuple(s for s in self.sites if s.kind == kind)

    @property
    def lcps(self) -> tuple[Site, ...]:
        """The LCPs, in site order (leaf relay by leaf relay)."""
        return self.of_kind("lcp")

    def children(self, name: str, kinds: Iterable[SiteKind] | None = None) -> tuple[Site, ...]:
        """The sites whose parent is ``name`` (of ``kinds`` only, if given), in site order."""
        self.site(name)
        wanted = set(SITE_KINDS if kinds is None else kinds)
        found = (self.sites[self._index[c]] for c in self._children[name])
        return tuple(s for s in found if s.kind in wanted)

    def path_to_root(self, name: str) -> tuple[str, ...]:
        """The names from ``name`` up the parent links to the server, both included."""
        path = [name]
        parent = self.site(name).parent
        while parent is not None:
            path.append(parent)
            parent = self.sites[self._index[parent]].parent
        return tuple(path)

    def relay_path(self, name: str) -> tuple[str, ...]:
        """The relays a site's messages cross to reach the server, nearest first.

        A relay's path starts with itself; the server's is empty.
        """
        site = self.site(name)
        start = site.name if site.kind == "relay" else site.relay
        if start is None:
            return ()
        return tuple(n for n in self.path_to_root(start) if n != "server")

    def subtree(self, name: str) -> tuple[str, ...]:
        """``name`` and every site below it by parent links, in site order."""
        inside = {name}
        for site in self.sites[self._index[self.site(name).name] + 1 :]:
            if site.parent in inside:
                inside.add(site.name)
        return tuple(s.name for s in self.sites if s.name in inside)

    @cached_property
    def _lcps_below(self) -> dict[str, tuple[str, ...]]:
        below: dict[str, list[str]] = {s.name: [] for s in self.sites}
        for lcp in self.lcps:
            for above in {*self.path_to_root(lcp.name), *self.relay_path(lcp.name)}:
                below[above].append(lcp.name)
        return {k: tuple(v) for k, v in below.items()}

    def lcps_under(self, name: str) -> tuple[str, ...]:
        """The LCPs below ``name``, in site order.

        Below an aggregator or the server: by parent links. Below a relay: the LCPs whose
        messages cross it (this also works with ``lcp_only``). An LCP is below itself.
        """
        self.site(name)
        return self._lcps_below[name]

    def aggregation_order(self) -> tuple[str, ...]:
        """The sites that fold partial sums, every child before its parent: deepest tier
        first, site order within a tier, the server last. Relays are not in it."""
        folding = [(s.tier, i) for i, s in enumerate(self.sites) if s.kind in AGGREGATING]
        folding.sort(key=lambda t: (-t[0], t[1]))
        return tuple(self.sites[i].name for _, i in folding)

    def counts(self) -> TreeCounts:
        """The counts of the sites actually built (compare :func:`tree_counts`)."""
        relays = self.of_kind("relay")
        leaf = sum(1 for r in relays if not self.children(r.name, ["relay"]))
        aggregators = len(self.of_kind("aggregator"))
        lcps = len(self.lcps)
        return TreeCounts(
            relays_leaf=leaf,
            relays_nonleaf=len(relays) - leaf,
            relays_total=len(relays),
            clients_leaf=lcps,
            clients_nonleaf=aggregators,
            clients_total=aggregators + lcps,
            total_sites=len(self.sites),
        )


def _check_site(
    site: Site, position: int, seen: dict[str, int], sites: tuple[Site, ...], ports: dict[int, str]
) -> None:
    """Refuse a site that breaks the tree's invariants, naming it."""
    where = f"site {position} ({site.name!r})"
    if site.kind not in SITE_KINDS:
        raise TreeError(f"{where}: kind {site.kind!r} is not one of {list(SITE_KINDS)}")
    if not site.name or site.name in seen:
        raise TreeError(f"{where}: names must be non-empty and unique")
    if (position == 0) != (site.kind == "server"):
        raise TreeError(f"{where}: the server must be the first site, and the only one")
    if site.kind == "server":
        if site.parent is not None or site.tier != 0:
            raise TreeError(f"{where}: the server has no parent and tier 0")
    else:
        if site.parent not in seen:
            raise TreeError(f"{where}: parent {site.parent!r} is not an earlier site")
        parent = sites[seen[site.parent]]
        if parent.kind not in ALLOWED_PARENTS[site.kind]:
            raise TreeError(f"{where}: a {site.kind} cannot report to a {parent.kind}")
        if site.tier != parent.tier + 1:
            raise TreeError(f"{where}: tier {site.tier}, expected {parent.tier + 1}")
    if not 1 <= site.port <= 65535 or site.port in ports:
        raise TreeError(f"{where}: port {site.port} is not free in 1..65535")
    ports[site.port] = site.name


def relay_tree(
    depth: int, width: int, clients: int, lcp_only: bool = False, base_port: int = DEFAULT_BASE_PORT
) -> RelayTree:
    """Build the relay tree of ``depth`` tiers, ``width`` children per relay and ``clients``
    LCPs per leaf relay (see the module docstring for names, parents and ports).

    Raises
    ------
    TreeRangeError
        If depth, width or clients is below 1 (``redfl tree`` enforces narrower ranges).
    TreeError
        If the tree would have over :data:`~redfl.topology.tree.MAX_BUILT_SITES`
        sites, or its ports would not fit below 65536.
    """
    total = tree_counts(depth, width, clients, lcp_only).total_sites
    if total > MAX_BUILT_SITES:
        raise TreeError(f"the tree has {total} sites, over the {MAX_BUILT_SITES} that are built")
    if base_port < 1 or base_port + total - 1 > 65535:
        raise TreeError(
            f"base_port {base_port}: the {total} sites need ports {base_port}.."
            f"{base_port + total - 1}, which must lie in 1..65535"
        )
    sites = [Site("server", "server", None, 0, base_port)]

    def add(name: str, kind: SiteKind, parent: str, tier: int, relay: str | None) -> None:
        sites.append(Site(name, kind, parent, tier, base_port + len(sites), relay))

    frontier: list[tuple[int, ...]] = [()]
    for tier in range(1, depth + 1):
        paths = [(*above, i) for above in frontier for i in range(1, width + 1)]
        for path in paths:
            up = path[:-1]
            add(relay_name(path), "relay", relay_name(up) if up else "server", tier, None)
            if not lcp_only:
                parent = aggregator_name(up) if up else "server"
                add(aggregator_name(path), "aggregator", parent, tier, relay_name(path))
        frontier = paths
    for path in frontier:
        parent, tier = ("server", 1) if lcp_only else (aggregator_name(path), depth + 1)
        for j in range(1, clients + 1):
            add(lcp_name(path, j), "lcp", parent, tier, relay_name(path))
    return RelayTree(depth, width, clients, lcp_only, tuple(sites))
