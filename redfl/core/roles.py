"""Node roles: ``train``, ``eval``, ``test``, combinable as ``train-eval``."""

from __future__ import annotations

ROLES = ("train", "eval", "test")


def parse_roles(roles: str | frozenset[str] | set[str] | tuple[str, ...]) -> frozenset[str]:
    """Turn ``"train-eval"`` (or an iterable of role names) into a set of roles.

    Raises
    ------
    ValueError
        If a role is not one of ``train``, ``eval``, ``test``, or none is given.
    """
    parts = roles.split("-") if isinstance(roles, str) else list(roles)
    bad = [p for p in parts if p not in ROLES]
    if bad or not parts:
        raise ValueError(
            f"roles must be made of {', '.join(ROLES)} joined by '-' (e.g. 'train-eval'), "
            f"got {roles!r}"
        )
    return frozenset(parts)
