"""The ``remote`` decorator: give a node class a dedicated actor with its own options."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

DEFAULT_MAX_CONCURRENCY = 100
"""Threads in a dedicated node actor: its ``train()``, incoming messages and pulls."""

T = TypeVar("T", bound=type)


def remote_options(cls: type) -> dict[str, Any] | None:
    """The actor options a class was decorated with, or ``None``."""
    options = cls.__dict__.get("__redfl_remote__")
    return dict(options) if options is not None else None


@overload
def remote(cls: T, /) -> T: ...
@overload
def remote(
    *, max_concurrency: int = ..., num_cpus: float = ..., num_gpus: float = ..., **options: Any
) -> Callable[[T], T]: ...
def remote(cls: T | None = None, /, **options: Any) -> T | Callable[[T], T]:
    """Mark a node class so each of its nodes runs in a dedicated, named Ray actor.

    The class is returned unchanged (it still runs in-process on the ``local`` runtime);
    on Ray its nodes get an actor named ``federation_id/node_id`` with these options.
    ``max_concurrency`` defaults to 100; below 2 a node could not receive while it trains,
    so it is refused.

    Examples
    --------
    >>> from redfl.nodes import FederatedNode
    >>> @remote(num_cpus=0.5)
    ... class Heavy(FederatedNode):
    ...     pass
    >>> remote_options(Heavy)["max_concurrency"]
    100
    """
    options.setdefault("max_concurrency", DEFAULT_MAX_CONCURRENCY)
    concurrency = options["max_concurrency"]
    if not isinstance(concurrency, int) or concurrency < 2:
        raise ValueError(
            f"max_concurrency must be an int >= 2 (a node must receive while it trains), "
            f"got {concurrency!r}"
        )
    for key in ("num_cpus", "num_gpus"):
        if key in options and (not isinstance(options[key], int | float) or options[key] < 0):
            raise ValueError(f"{key} must be a number >= 0, got {options[key]!r}")

    def mark(target: T) -> T:
        target.__redfl_remote__ = dict(options)  # type: ignore[attr-defined]
        return target

    return mark(cls) if cls is not None else mark
