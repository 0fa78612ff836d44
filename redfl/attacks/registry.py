"""The attack simulations by name (:data:`ATTACKS`) and the ``[attack]`` table.

A client attack is carried out by the malicious clients themselves (an :class:`Attack`
their wrapper applies); a server attack wraps the strategy, where colluding attackers'
replies meet (:class:`LittleIsEnough`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from redfl.algorithms.strategy import Strategy
from redfl.attacks.alie import LittleIsEnough
from redfl.attacks.clients import Attack, GaussianNoise, LabelFlip, SignFlip
from redfl.core.config import Strict
from redfl.core.registry import Registry


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack: who carries it out, and how it is built from ``[attack]``.

    Attributes
    ----------
    side:
        ``"client"``: :attr:`client` builds the attack the malicious clients apply;
        ``"server"``: :attr:`wrap` wraps the strategy (attackers' ids, config).
    """

    side: Literal["client", "server"]
    client: Callable[[AttackConfig], Attack] | None = None
    wrap: Callable[[Strategy, Sequence[str], AttackConfig], Strategy] | None = None


ATTACKS: Registry[AttackSpec] = Registry("attack")
"""Attack simulations by ``attack.kind`` (``"none"`` is not an attack and not listed)."""


class AttackConfig(Strict):
    """The ``[attack]`` table: which attack (a registered kind, or ``"none"``), and the
    seeded fraction of malicious clients; the other keys parameterise the attacks."""

    kind: Annotated[str, AfterValidator(ATTACKS.validator(also=("none",)))] = "none"
    malicious_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    scale: float = Field(default=10.0, gt=0.0, allow_inf_nan=False)
    std: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    num_classes: int = Field(default=10, ge=2)
    z: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _fraction_with_kind(self) -> AttackConfig:
        if self.kind == "none" and self.malicious_fraction > 0:
            raise ValueError("malicious_fraction > 0 needs an attack kind")
        if self.kind != "none" and self.malicious_fraction == 0:
            raise ValueError(f"attack kind {self.kind!r} needs malicious_fraction > 0")
        return self


def _sign_flip(config: AttackConfig) -> Attack:
    return SignFlip(config.scale)


def _gaussian(config: AttackConfig) -> Attack:
    return GaussianNoise(config.std)


def _label_flip(config: AttackConfig) -> Attack:
    return LabelFlip(config.num_classes)


def _alie(strategy: Strategy, attackers: Sequence[str], config: AttackConfig) -> Strategy:
    return LittleIsEnough(strategy, attackers, config.z)


ATTACKS.register("sign_flip", AttackSpec("client", client=_sign_flip), uses=("scale",))
ATTACKS.register("gaussian", AttackSpec("client", client=_gaussian), uses=("std",))
ATTACKS.register("label_flip", AttackSpec("client", client=_label_flip), uses=("num_classes",))
ATTACKS.register("alie", AttackSpec("server", wrap=_alie), uses=("z",))
