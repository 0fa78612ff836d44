"""``Instructions``: what the server tells a client for one round, typed.

The round number, learning rate, proximal term and the number of local epochs are
fields; anything else a strategy or a user sends travels in ``extra``. The object is also
a read-only mapping (``config["round"]``, ``config.get("lr")``, ``dict(config)``), so client
code written against plain config dicts keeps working.

The schema, not the strategy, sets ``round``: a strategy's ``fit_config`` may return a plain
dict without it (:meth:`Instructions.make` fills it in).

Examples
--------
>>> ins = Instructions.make(3, {"proximal_mu": 0.1, "note": "x"})
>>> ins.round, ins.proximal_mu, ins["note"], ins["round"]
(3, 0.1, 'x', 3)
>>> sorted(ins)
['note', 'phase', 'proximal_mu', 'round']
>>> ins.merged({"lr_scale": 2.0})["lr_scale"]
2.0
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Literal

Phase = Literal["fit", "evaluate"]

_TYPED = ("round", "phase", "learning_rate", "proximal_mu", "local_epochs")


@dataclass(frozen=True)
class Instructions(Mapping[str, Any]):
    """One round's instructions to a client: typed fields plus the sender's own keys.

    Parameters
    ----------
    round:
        The round number (1-based).
    phase:
        ``"fit"`` or ``"evaluate"``.
    learning_rate, proximal_mu, local_epochs:
        Optional hints a client may honour (``None``: the client's own default).
    extra:
        Any other keys (read-only).
    """

    round: int
    phase: Phase = "fit"
    learning_rate: float | None = None
    proximal_mu: float | None = None
    local_epochs: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.round, bool) or not isinstance(self.round, int) or self.round < 0:
            raise ValueError(f"Instructions.round must be an int >= 0, got {self.round!r}")
        if self.phase not in ("fit", "evaluate"):
            raise ValueError(f"Instructions.phase must be 'fit' or 'evaluate', got {self.phase!r}")
        clash = sorted(set(self.extra) & set(_TYPED))
        if clash:
            raise ValueError(f"Instructions.extra must not repeat typed fields: {clash}")
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @classmethod
    def make(
        cls, rnd: int, config: Mapping[str, Any] | None = None, phase: Phase = "fit"
    ) -> Instructions:
        """Instructions for round ``rnd`` from a config mapping (typed keys lifted out).

        A ``round`` key in ``config`` is ignored: the schema's round number wins.
        """
        if isinstance(config, Instructions):
            return replace(config, round=rnd, phase=phase)
        values = dict(config or {})
        values.pop("round", None)
        values.pop("phase", None)
        typed = {k: values.pop(k) for k in _TYPED[2:] if k in values}
        return cls(rnd, phase, **typed, extra=values)

    def merged(self, more: Mapping[str, Any]) -> Instructions:
        """These instructions with ``more`` keys over them (typed keys update the fields)."""
        if not more:
            return self
        return Instructions.make(self.round, {**self._items(), **more}, self.phase)

    def _items(self) -> dict[str, Any]:
        present = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name in _TYPED and getattr(self, f.name) is not None
        }
        return {**present, **self.extra}

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with a plain dict for ``extra`` (a read-only proxy does not pickle)."""
        typed = (self.round, self.phase, self.learning_rate, self.proximal_mu, self.local_epochs)
        return (Instructions, (*typed, dict(self.extra)))

    def __getitem__(self, key: str) -> Any:
        if key in _TYPED:
            value = getattr(self, key)
            if value is None:
                raise KeyError(key)
            return value
        return self.extra[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())
