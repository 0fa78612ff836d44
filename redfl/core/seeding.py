"""Seeded randomness as a pure function of (seed, round, client id).

Sampling uses ``round_rng(seed, rnd)`` and each client's local randomness uses
``client_rng(seed, rnd, client_id)``, so results never depend on which process ran what or
in which order work finished.
"""

from __future__ import annotations

import zlib

import numpy as np


def node_key(node_id: str) -> int:
    """A stable 32-bit integer for a node id (CRC-32 of its UTF-8 bytes)."""
    return zlib.crc32(node_id.encode("utf-8"))


def round_rng(seed: int, rnd: int, stream: int = 0) -> np.random.Generator:
    """The generator for driver-side choices of round ``rnd`` (client sampling)."""
    return np.random.default_rng([seed, rnd, stream, 0x5EED])


def client_rng(seed: int, rnd: int, node_id: str) -> np.random.Generator:
    """The generator a client uses for its local work in round ``rnd``."""
    return np.random.default_rng([seed, rnd, node_key(node_id)])
