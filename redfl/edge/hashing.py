"""Rendezvous (highest-random-weight) hashing of device ids onto LCPs.

Each (LCP, device) pair gets a score from a stable hash (BLAKE2b, 8-byte digest, never
Python's salted ``hash()``); a device goes to the LCP with the highest score, and its next
choices are the following LCPs in score order (Thaler & Ravishankar, "Using name-based
mappings to increase hit rates", IEEE/ACM ToN 1998). Adding an LCP moves only the devices
whose new top score is the newcomer (about 1/(N+1) of them); removing one moves only the
devices that were on it. The mapping depends on the names only, so every proxy agrees.

>>> choose("device-7", ["lcp-a", "lcp-b", "lcp-c"])[0] in {"lcp-a", "lcp-b", "lcp-c"}
True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from hashlib import blake2b

__all__ = ["choose", "moved_fraction", "score"]


def score(lcp: str, device_id: str) -> int:
    """Return the stable 64-bit score of the pair ``(lcp, device_id)``.

    Parameters
    ----------
    lcp : str
        LCP name.
    device_id : str
        Device id.

    Returns
    -------
    int
        An unsigned 64-bit integer, identical across processes and runs.
    """
    digest = blake2b(f"{lcp}\x00{device_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def choose(device_id: str, lcps: Iterable[str]) -> list[str]:
    """Rank the LCPs for a device, best first.

    Parameters
    ----------
    device_id : str
        Device id.
    lcps : Iterable[str]
        LCP names (order does not matter; duplicates are ignored).

    Returns
    -------
    list[str]
        All distinct LCP names sorted by descending score (ties broken by name). The first is
        the device's home; a proxy skips the ones that are down.
    """
    return sorted(set(lcps), key=lambda lcp: (-score(lcp, device_id), lcp))


def moved_fraction(device_ids: Sequence[str], before: Sequence[str], after: Sequence[str]) -> float:
    """Return the fraction of devices whose first choice differs between two LCP sets.

    Parameters
    ----------
    device_ids : Sequence[str]
        Devices to map; must not be empty.
    before, after : Sequence[str]
        The LCP names before and after a change; neither may be empty.

    Returns
    -------
    float
        Moved devices divided by ``len(device_ids)``.

    Raises
    ------
    ValueError
        If ``device_ids``, ``before`` or ``after`` is empty.
    """
    if not device_ids or not before or not after:
        raise ValueError("device_ids, before and after must all be non-empty")
    moved = sum(choose(d, before)[0] != choose(d, after)[0] for d in device_ids)
    return moved / len(device_ids)
