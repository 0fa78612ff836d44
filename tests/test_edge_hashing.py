"""Rendezvous hashing: stable, balanced, and minimal movement on LCP changes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from redfl.edge.hashing import choose, moved_fraction, score

IDS = [f"device-{i}" for i in range(100_000)]


def test_score_is_stable_across_processes() -> None:
    code = "from redfl.edge.hashing import score; print(score('lcp-1', 'd-42'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == score("lcp-1", "d-42")


def test_choose_ranks_every_lcp_once() -> None:
    ranked = choose("d-1", ["b", "a", "c", "a"])
    assert sorted(ranked) == ["a", "b", "c"]
    assert ranked == choose("d-1", ["c", "b", "a"])  # input order does not matter


def test_load_is_balanced() -> None:
    lcps = [f"lcp-{i}" for i in range(8)]
    counts = dict.fromkeys(lcps, 0)
    for d in IDS[:40_000]:
        counts[choose(d, lcps)[0]] += 1
    assert all(abs(c - 5_000) < 500 for c in counts.values()), counts


@pytest.fixture(scope="module")
def table() -> dict[str, np.ndarray]:
    """Scores of every id for lcp-0 .. lcp-15 and lcp-new (one hash per pair)."""
    names = [*(f"lcp-{i}" for i in range(16)), "lcp-new"]
    return {lcp: np.array([score(lcp, d) for d in IDS], dtype=np.uint64) for lcp in names}


def homes(table: dict[str, np.ndarray], lcps: list[str]) -> np.ndarray:
    """Index into ``lcps`` of each id's first choice."""
    return np.asarray(np.argmax(np.stack([table[lcp] for lcp in lcps]), axis=0))


@pytest.mark.parametrize("n", [4, 8, 16])
def test_adding_and_removing_one_lcp_moves_about_one_nth(
    n: int, table: dict[str, np.ndarray]
) -> None:
    lcps = [f"lcp-{i}" for i in range(n)]
    before = np.array(lcps)[homes(table, lcps)]
    grown = [*lcps, "lcp-new"]
    after_add = np.array(grown)[homes(table, grown)]
    added = float(np.mean(before != after_add))
    assert 0.5 / (n + 1) <= added <= 1.5 / (n + 1), added
    assert set(after_add[before != after_add]) == {"lcp-new"}  # moves only to the newcomer
    gone = lcps[1]
    rest = [lcp for lcp in lcps if lcp != gone]
    after = np.array(rest)[homes(table, rest)]
    moved = before != after
    assert 0.5 / n <= float(np.mean(moved)) <= 1.5 / n
    assert set(before[moved]) == {gone}  # only the removed LCP's devices move
    # the table agrees with choose(), and a moved device goes to its second choice
    for i in np.flatnonzero(moved)[:200]:
        ranked = choose(IDS[i], lcps)
        assert ranked[0] == gone and ranked[1] == after[i]


def test_moved_fraction_rejects_empty_inputs() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        moved_fraction([], ["a"], ["b"])
