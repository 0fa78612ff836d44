"""Strategies under attack: final accuracy on digits, and the cost of robust aggregation.

Workload: digits softmax (docs/benchmarks.md: tiled 4 times, IID, lr 0.1, 5 epochs, batch
32), 50 clients all sampled every round, 20 rounds, 20 % of the clients malicious (seeded
choice), central evaluation on the held-out 20 %; ``runtime="local"``. Attacks: none,
sign flip (scale 10), Gaussian noise (std 1), label flip, "a little is enough".
Target: under sign flip, FedAvg ends below 0.5 while Krum, FedMedian and
FedTrimmedAvg(0.2) end at >= 0.85. Also prints the driver's aggregation milliseconds per
round for each strategy (mean over the no-attack run).

Run: ``python bench/robustness.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import time
from collections.abc import Callable, Sequence

from redfl import StarFederation
from redfl.algorithms import (
    Bulyan,
    FedAvg,
    FedMedian,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
    StrategyWrapper,
)
from redfl.algorithms.strategy import ClientUpdate
from redfl.attacks import (
    Attack,
    Attacked,
    GaussianNoise,
    LabelFlip,
    LittleIsEnough,
    SignFlip,
    choose_attackers,
)
from redfl.core.arrays import Parameters, WeightedSum
from redfl.examples.digits import DigitsClient, DigitsOptions, central_evaluation

CLIENTS, ROUNDS, FRACTION = 50, 20, 0.2
OPTIONS = DigitsOptions(partition="iid", test_fraction=0.2, tile=4)
IDS = [f"client-{i}" for i in range(CLIENTS)]
ATTACKERS = choose_attackers(IDS, FRACTION, seed=0)
F = len(ATTACKERS)

STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "FedAvg": FedAvg,
    "FedMedian": FedMedian,
    "FedTrimmedAvg(0.2)": lambda: FedTrimmedAvg(beta=0.2),
    f"Krum(f={F})": lambda: Krum(f=F),
    f"MultiKrum(f={F}, m=20)": lambda: MultiKrum(f=F, m=20),
    f"Bulyan(f={F})": lambda: Bulyan(f=F),
}
ATTACKS: dict[str, Attack | None] = {
    "none": None,
    "sign flip x10": SignFlip(10.0),
    "gaussian std 1": GaussianNoise(1.0),
    "label flip": LabelFlip(10),
    "ALIE": None,
}


class Timed(StrategyWrapper):
    """Times the wrapped strategy's aggregation (driver side)."""

    def __init__(self, inner: Strategy) -> None:
        super().__init__(inner)
        self.seconds: list[float] = []

    def aggregate(self, rnd: int, current: Parameters, total: WeightedSum) -> Parameters:
        started = time.perf_counter()
        result = self.inner.aggregate(rnd, current, total)
        self.seconds.append(time.perf_counter() - started)
        return result

    def aggregate_updates(
        self, rnd: int, current: Parameters, updates: Sequence[ClientUpdate]
    ) -> Parameters:
        started = time.perf_counter()
        result = self.inner.aggregate_updates(rnd, current, updates)
        self.seconds.append(time.perf_counter() - started)
        return result


def run(strategy: Strategy, attack_name: str) -> float:
    attack = ATTACKS[attack_name]
    client = (
        DigitsClient if attack is None else Attacked(DigitsClient, attack, frozenset(ATTACKERS))
    )
    if attack_name == "ALIE":
        strategy = LittleIsEnough(strategy, ATTACKERS)
    federation = StarFederation(
        client,
        CLIENTS,
        initial_parameters=DigitsClient.initial_parameters(OPTIONS),
        strategy=strategy,
        options=OPTIONS.model_dump(),
        evaluate_fn=central_evaluation(OPTIONS),
        runtime="local",
        seed=0,
    )
    accuracy = federation.train(ROUNDS).history[-1].accuracy
    assert accuracy is not None
    return accuracy


def main() -> None:
    print(f"digits, {CLIENTS} clients, {F} attackers, {ROUNDS} rounds; final accuracy")
    names = list(ATTACKS)
    print("| strategy | " + " | ".join(names) + " | aggregation ms/round |")
    print("|---" * (len(names) + 2) + "|")
    results: dict[tuple[str, str], float] = {}
    for label, make in STRATEGIES.items():
        timed = Timed(make())
        cells = []
        for attack in names:
            strategy: Strategy = timed if attack == "none" else make()
            results[label, attack] = run(strategy, attack)
            cells.append(f"{results[label, attack]:.3f}")
        ms = 1000 * sum(timed.seconds) / max(1, len(timed.seconds))
        print(f"| {label} | " + " | ".join(cells) + f" | {ms:.2f} |")
    fedavg = results["FedAvg", "sign flip x10"]
    robust = [
        results[k, "sign flip x10"] for k in ("FedMedian", "FedTrimmedAvg(0.2)", f"Krum(f={F})")
    ]
    met = fedavg < 0.5 and min(robust) >= 0.85
    print(
        f"sign flip x10: FedAvg {fedavg:.3f} (target < 0.5); Krum/Median/Trimmed min "
        f"{min(robust):.3f} (target >= 0.85; ratio {min(robust) / 0.85:.3f}): "
        f"{'met' if met else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
