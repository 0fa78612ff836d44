"""Malicious-client wrappers: an attacked client trains honestly, then corrupts its reply.

- Sign flip with scale: sends ``w - scale * (w_k - w)`` instead of ``w_k`` (w: global).
- Gaussian noise: adds ``N(0, std^2)`` to every coordinate of its honest reply.
- Label flip: trains on labels ``y -> num_classes - 1 - y``: the fit instructions carry
  the extra key ``label_flip = num_classes``, which the shipped models' local training
  honours.

Attackers are chosen once, seeded (:func:`choose_attackers`); :class:`Attacked` wraps a
client class so that the chosen ids, and only they, misbehave.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from redfl.core.arrays import Parameters
from redfl.core.instructions import Instructions
from redfl.core.result import EvaluateResult, FitResult
from redfl.core.seeding import node_key
from redfl.nodes.client import Client
from redfl.nodes.node import NodeContext, NodePort


def choose_attackers(node_ids: Sequence[str], fraction: float, seed: int) -> list[str]:
    """``round(fraction * n)`` of ``node_ids``, a function of ``seed`` only, in id order.

    Examples
    --------
    >>> ids = [f"client-{i}" for i in range(10)]
    >>> len(choose_attackers(ids, 0.2, seed=0))
    2
    >>> choose_attackers(ids, 0.2, seed=0) == choose_attackers(ids, 0.2, seed=0)
    True
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"malicious_fraction must be in [0, 1], got {fraction}")
    count = math.floor(fraction * len(node_ids) + 0.5)
    picked = np.random.default_rng([seed, 0xA77AC4]).choice(len(node_ids), count, replace=False)
    return [node_ids[i] for i in sorted(picked)]


class Attack:
    """How an attacker corrupts its honest fit (base: honest)."""

    def config(self) -> dict[str, Any]:
        """Extra fit config entries for the attacker's own training."""
        return {}

    def corrupt(
        self, global_: Parameters, honest: Parameters, rng: np.random.Generator
    ) -> Parameters:
        """The parameters sent instead of ``honest``."""
        return honest


@dataclass(frozen=True)
class SignFlip(Attack):
    """Send ``w - scale * (w_k - w)``: the update reversed and scaled (scale > 0)."""

    scale: float = 10.0

    def corrupt(
        self, global_: Parameters, honest: Parameters, rng: np.random.Generator
    ) -> Parameters:
        """The flipped, scaled update."""
        return {
            k: (g - self.scale * (np.asarray(honest[k], np.float64) - g)).astype(g.dtype)
            for k, g in global_.items()
        }


@dataclass(frozen=True)
class GaussianNoise(Attack):
    """Add ``N(0, std^2)`` to every coordinate of the honest reply (std > 0)."""

    std: float = 1.0

    def corrupt(
        self, global_: Parameters, honest: Parameters, rng: np.random.Generator
    ) -> Parameters:
        """The noisy reply."""
        return {
            k: (v + rng.normal(0.0, self.std, size=v.shape)).astype(global_[k].dtype)
            for k, v in honest.items()
        }


@dataclass(frozen=True)
class LabelFlip(Attack):
    """Train on ``num_classes - 1 - y`` (via the ``label_flip`` fit config key)."""

    num_classes: int = 10

    def config(self) -> dict[str, Any]:
        """``{"label_flip": num_classes}``."""
        return {"label_flip": self.num_classes}


class MaliciousClient(Client):
    """Wraps a live client; misbehaves when its id is one of ``attackers``."""

    def __init__(self, inner: Client, attack: Attack, attackers: frozenset[str]) -> None:
        super().__init__()
        self.inner, self.attack, self.attackers = inner, attack, attackers

    def bind(self, context: NodeContext, port: NodePort | None) -> None:
        """Bind this wrapper and the wrapped client."""
        super().bind(context, port)
        self.inner.bind(context, port)

    def setup(self) -> None:
        """The wrapped client's setup."""
        self.inner.setup()

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> FitResult | tuple[Parameters, int, Mapping[str, float]]:
        """Honest fit; then, for an attacker, the attack's corruption of it."""
        if self.node_id not in self.attackers:
            return self.inner.fit(parameters, config)
        orders = Instructions.of(config).merged(self.attack.config())
        new, count, metrics = self.inner.fit(parameters, orders)
        key = [self.context.seed, orders.round, node_key(self.node_id), 0xBAD]
        rng = np.random.default_rng(key)
        return self.attack.corrupt(dict(parameters), new, rng), count, metrics

    def evaluate(
        self, parameters: Parameters, config: Instructions
    ) -> EvaluateResult | tuple[float, int, Mapping[str, float]]:
        """The wrapped client's evaluation (attackers evaluate honestly)."""
        return self.inner.evaluate(parameters, config)


@dataclass(frozen=True)
class Attacked:
    """A client factory whose clients in ``attackers`` run ``attack``.

    Pass it where a client class goes (``StarFederation(Attacked(MyClient, ...), ...)``);
    it is built on the worker like the class itself.
    """

    client: Callable[..., Client]
    attack: Attack
    attackers: frozenset[str]

    def __call__(self, **options: Any) -> MaliciousClient:
        """Build the wrapped client with ``options``."""
        return MaliciousClient(self.client(**options), self.attack, self.attackers)
