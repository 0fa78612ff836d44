"""Node roles: ``train``, ``eval``, ``test``, combinable as ``train-eval``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, cast, get_args

Role = Literal["train", "eval", "test"]
"""What a node does: train (fit, run rounds), eval (federated evaluation), test."""

ROLES: tuple[Role, ...] = get_args(Role)


def parse_roles(roles: str | Iterable[str]) -> frozenset[Role]:
    """Turn ``"train-eval"`` (or an iterable of role names) into a set of roles.

    Raises
    ------
    ValueError
        If a role is not one of ``train``, ``eval``, ``test``, or none is given.

    Examples
    --------
    >>> sorted(parse_roles("train-eval"))
    ['eval', 'train']
    """
    parts = roles.split("-") if isinstance(roles, str) else list(roles)
    bad = [p for p in parts if p not in ROLES]
    if bad or not parts:
        raise ValueError(
            f"roles must be made of {', '.join(ROLES)} joined by '-' (e.g. 'train-eval'), "
            f"got {roles!r}"
        )
    return frozenset(cast(Role, p) for p in parts)
