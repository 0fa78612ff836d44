"""Assigning clients to the LCPs of a tree: even spread, a number per LCP, an explicit map."""

from __future__ import annotations

from typing import Any

import pytest

from redfl.topology import TreeError, assign_clients, lcp_of, relay_tree

CLIENTS = [f"c{i}" for i in range(10)]
LCPS = ["l1", "l2", "l3"]


def test_even_spread_in_contiguous_blocks() -> None:
    assert assign_clients(CLIENTS, LCPS) == {
        "l1": ("c0", "c1", "c2", "c3"),
        "l2": ("c4", "c5", "c6"),
        "l3": ("c7", "c8", "c9"),
    }
    assert assign_clients(["a"], LCPS) == {"l1": ("a",), "l2": (), "l3": ()}


def test_a_number_per_lcp() -> None:
    tree = relay_tree(1, 2, 2)
    lcps = [s.name for s in tree.lcps]
    clients = [f"c{i}" for i in range(12)]
    assignment = assign_clients(clients, lcps, per_lcp=3)
    assert list(assignment) == ["lcp-1-1", "lcp-1-2", "lcp-2-1", "lcp-2-2"]
    assert assignment["lcp-1-2"] == ("c3", "c4", "c5")
    assert sorted(lcp_of(assignment)) == sorted(clients)
    assert lcp_of(assignment)["c11"] == "lcp-2-2"


def test_explicit_map_keeps_client_order_and_allows_empty_lcps() -> None:
    mapping = {"c9": "l1", "c0": "l1", **{c: "l3" for c in CLIENTS[1:9]}}
    assignment = assign_clients(CLIENTS, LCPS, mapping)
    assert assignment == {"l1": ("c0", "c9"), "l2": (), "l3": tuple(CLIENTS[1:9])}
    pairs = [(c, "l2") for c in reversed(CLIENTS)]
    assert assign_clients(CLIENTS, LCPS, pairs)["l2"] == tuple(CLIENTS)


@pytest.mark.parametrize(
    ("clients", "lcps", "per_lcp", "message"),
    [
        ([], LCPS, None, "client_ids: no clients to assign"),
        (CLIENTS, [], None, "lcps: no LCPs to assign clients to"),
        (["a", "b", "a"], LCPS, None, "client_ids: 'a' appears twice"),
        (CLIENTS, ["l1", "l1"], None, "lcps: 'l1' appears twice"),
        (CLIENTS, LCPS, 0, "per_lcp 0 is out of range 1 or more"),
        (CLIENTS, LCPS, 4, "per_lcp 4 x 3 LCPs = 12 clients, but 10 client ids were given"),
        (CLIENTS, LCPS, 2.5, "per_lcp must be None, an int or a client -> LCP map, got float"),
        (CLIENTS, LCPS, True, "per_lcp must be None, an int or a client -> LCP map, got bool"),
        (CLIENTS, LCPS, "l1", "got str"),
        (["a", "b"], LCPS, {"a": "l1", "b": "l9"}, "client 'b' is assigned to unknown LCP 'l9'"),
        (["a", "b"], LCPS, {"a": "l1", "z": "l1"}, "client 'z' is not one of the client ids"),
        (["a", "b"], LCPS, {"a": "l1"}, r"1 clients have no LCP: \['b'\]"),
        (["a", "b"], LCPS, [("a", "l1"), ("b", "l2"), ("a", "l3")], "'a' is assigned twice"),
        (["a", "b"], LCPS, [("a", "l1", "x")], "expected \\(client, lcp\\) pairs"),
    ],
)
def test_bad_assignments_name_the_fault(
    clients: list[str], lcps: list[str], per_lcp: Any, message: str
) -> None:
    with pytest.raises(TreeError, match=message):
        assign_clients(clients, lcps, per_lcp)


def test_unknown_lcp_message_lists_the_lcps() -> None:
    lcps = [f"lcp-{i}" for i in range(8)]
    with pytest.raises(TreeError, match=r"the LCPs are \['lcp-0', .*'lcp-4', \.\.\. \(3 more\)\]"):
        assign_clients(["a"], lcps, {"a": "nope"})
