"""Which clients hang under which LCP of a relay tree. No Ray.

:func:`assign_clients` returns, for every LCP in the given order, the tuple of its client
ids in the order of ``client_ids`` (the sampling order), so folding an LCP's clients in that
order is deterministic. Three ways to assign:

- ``per_lcp=None``: spread evenly in contiguous blocks, the first ``n % L`` LCPs one more;
- ``per_lcp=k`` (an int >= 1): exactly ``k`` per LCP in contiguous blocks; the number of
  clients must be ``k`` times the number of LCPs;
- an explicit map ``client -> LCP`` (a mapping, or a sequence of ``(client, lcp)`` pairs):
  every client must be assigned exactly once, to a known LCP.

Empty LCPs are allowed (with an explicit map, or when spreading fewer clients than LCPs): an
LCP with no clients folds an empty partial sum, which adds nothing to its parent's. They are
not failures; the hierarchy runner may simply skip them. At least one client is required.

Examples
--------
>>> assign_clients(["a", "b", "c"], ["l1", "l2"])
{'l1': ('a', 'b'), 'l2': ('c',)}
>>> assign_clients(["a", "b", "c"], ["l1", "l2"], {"a": "l2", "b": "l2", "c": "l2"})
{'l1': (), 'l2': ('a', 'b', 'c')}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from redfl.topology.tree import TreeError

Assignment = dict[str, tuple[str, ...]]
"""LCP name -> its client ids, in sampling order."""


def _shown(names: Sequence[str], limit: int = 5) -> str:
    head = ", ".join(repr(n) for n in names[:limit])
    return f"[{head}{f', ... ({len(names) - limit} more)' if len(names) > limit else ''}]"


def _unique(names: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise TreeError(f"{what}: {name!r} appears twice")
        seen.add(name)


def assign_clients(
    client_ids: Sequence[str],
    lcps: Sequence[str],
    per_lcp: int | Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
) -> Assignment:
    """Assign ``client_ids`` to ``lcps`` (see the module docstring).

    Raises
    ------
    TreeError
        Naming the fault: no clients or LCPs, a duplicate client or LCP, a client assigned
        twice, an unknown client or LCP, an unassigned client, a count that does not match.
    """
    if not client_ids:
        raise TreeError("client_ids: no clients to assign")
    if not lcps:
        raise TreeError("lcps: no LCPs to assign clients to")
    _unique(client_ids, "client_ids")
    _unique(lcps, "lcps")
    if per_lcp is None:
        base, extra = divmod(len(client_ids), len(lcps))
        sizes = [base + (i < extra) for i in range(len(lcps))]
        return _blocks(client_ids, lcps, sizes)
    if isinstance(per_lcp, int) and not isinstance(per_lcp, bool):
        if per_lcp < 1:
            raise TreeError(f"per_lcp {per_lcp} is out of range 1 or more")
        if per_lcp * len(lcps) != len(client_ids):
            raise TreeError(
                f"per_lcp {per_lcp} x {len(lcps)} LCPs = {per_lcp * len(lcps)} clients, "
                f"but {len(client_ids)} client ids were given"
            )
        return _blocks(client_ids, lcps, [per_lcp] * len(lcps))
    if isinstance(per_lcp, Mapping | Sequence) and not isinstance(per_lcp, str):
        return _explicit(client_ids, lcps, per_lcp)
    raise TreeError(
        f"per_lcp must be None, an int or a client -> LCP map, got {type(per_lcp).__name__}"
    )


def _blocks(client_ids: Sequence[str], lcps: Sequence[str], sizes: list[int]) -> Assignment:
    out: Assignment = {}
    start = 0
    for lcp, size in zip(lcps, sizes, strict=True):
        out[lcp] = tuple(client_ids[start : start + size])
        start += size
    return out


def _explicit(
    client_ids: Sequence[str],
    lcps: Sequence[str],
    mapping: Mapping[str, str] | Sequence[tuple[str, str]],
) -> Assignment:
    pairs = list(mapping.items()) if isinstance(mapping, Mapping) else list(mapping)
    target: dict[str, str] = {}
    known_lcps = set(lcps)
    known_clients = set(client_ids)
    for pair in pairs:
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise TreeError(f"per_lcp: expected (client, lcp) pairs, got {pair!r}")
        client, lcp = pair
        if client in target:
            raise TreeError(
                f"per_lcp: client {client!r} is assigned twice ({target[client]!r} and {lcp!r})"
            )
        if client not in known_clients:
            raise TreeError(f"per_lcp: client {client!r} is not one of the client ids")
        if lcp not in known_lcps:
            raise TreeError(
                f"per_lcp: client {client!r} is assigned to unknown LCP {lcp!r}; "
                f"the LCPs are {_shown(list(lcps))}"
            )
        target[client] = lcp
    missing = [c for c in client_ids if c not in target]
    if missing:
        raise TreeError(f"per_lcp: {len(missing)} clients have no LCP: {_shown(missing)}")
    out: dict[str, list[str]] = {lcp: [] for lcp in lcps}
    for client in client_ids:
        out[target[client]].append(client)
    return {lcp: tuple(members) for lcp, members in out.items()}


def lcp_of(assignment: Assignment) -> dict[str, str]:
    """Invert an assignment: client id -> its LCP."""
    return {client: lcp for lcp, members in assignment.items() for client in members}
