"""Registers the attack simulations (``attack.kind``).

A client attack is carried out by the malicious clients themselves (an :class:`Attack`
their wrapper applies); a server attack wraps the strategy, where colluding attackers'
replies meet (:class:`LittleIsEnough`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from redfl.attacks.alie import LittleIsEnough
from redfl.attacks.clients import Attack, GaussianNoise, LabelFlip, SignFlip
from redfl.core.registries import ATTACKS

if TYPE_CHECKING:
    from redfl.algorithms.strategy import Strategy
    from redfl.core.config_tables import AttackConfig


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
