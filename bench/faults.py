"""Faults: raising clients, SIGKILLed workers and a hung client, against an undisturbed run.

Workload: digits softmax (docs/benchmarks.md: tiled 4 times, IID, lr 0.1, 5 epochs, batch
32), 100 clients all sampled every round, 20 rounds, 2 workers, FedAvg, central
evaluation on the held-out 20 %; ``runtime="ray"``. Runs:

- undisturbed;
- (a) 10 % of the clients (a seeded choice) raise in every round;
- (b) one worker SIGKILLed every 5 rounds (rounds 5, 10, 15, 20; the workers take turns):
  a client in the middle of its worker's share kills its own process, once per round;
- (c) one client hangs 60 s in round 3, with ``client_timeout = 2``;
- (d) the same 100 clients in a hierarchy (``relay_tree(1, 4, 5)``: 4 top subtrees of 25
  clients, 2 per worker), undisturbed and with one worker SIGKILLed every 5 rounds (a client
  in the middle of a subtree kills its process, once per round; the workers take turns): the
  lost subtrees are folded again within the round.

Prints the wall time of ``train(20)`` (the workers are started before the clock; restarts
and waits for them count) and the sum of the rounds' own seconds against the undisturbed
run (the second of two, after a warm-up), each restart (worker, reason, seconds from the loss
being seen to the new process answering) and the extra seconds the kill rounds took,
round 3's seconds, the final accuracy and whether the final parameters are bit-identical
to the undisturbed run's. Targets: restart < 3 s per worker; (b) total <= undisturbed + 4 x
restart; (c) round 3 <= client_timeout + 1 s; (b) and (d) bit-identical to their undisturbed
runs.

Run: ``python bench/faults.py`` (about three minutes on 2 cores).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import signal
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from redfl import HierarchicalFederation, StarFederation
from redfl.attacks import choose_attackers
from redfl.core.arrays import Parameters
from redfl.core.events import Event, WorkerRestarted
from redfl.core.instructions import Instructions
from redfl.core.result import FederationResult
from redfl.examples.digits import DigitsClient, DigitsOptions, central_evaluation
from redfl.runtime.connect import ensure_ray
from redfl.runtime.resources import ResourcesConfig
from redfl.schemas.callbacks import Callback
from redfl.topology import relay_tree

CLIENTS, ROUNDS, WORKERS = 100, 20, 2
OPTIONS = DigitsOptions(partition="iid", test_fraction=0.2, tile=4)
RAISING = frozenset(choose_attackers([f"client-{i}" for i in range(CLIENTS)], 0.1, seed=0))
KILL_EVERY, HANG_ROUND, HANG_S, CLIENT_TIMEOUT = 5, 3, 60.0, 2.0


class RaisingClient(DigitsClient):
    """Raises in every round when it is one of the chosen 10 %."""

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        """Raise, or train as a digits client."""
        if self.node_id in RAISING:
            raise RuntimeError("injected failure")
        return super().fit(parameters, config)


class KillingClient(DigitsClient):
    """Kills its own worker process in every 5th round when it is that round's victim."""

    def __init__(self, marker_dir: str, **options: Any) -> None:
        super().__init__(**options)
        self.marker_dir = Path(marker_dir)

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        """Kill the worker once in a kill round (the re-run does not), else train."""
        rnd = config.round
        victim = f"client-{50 + (rnd // KILL_EVERY) % WORKERS}"  # mid-share, workers alternate
        marker = self.marker_dir / f"round-{rnd}"
        if rnd % KILL_EVERY == 0 and self.node_id == victim and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().fit(parameters, config)


class TreeKillingClient(KillingClient):
    """In the hierarchy: kills the worker folding agg-3 (rounds 5, 15) or agg-2 (10, 20)."""

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        """Kill the worker once in a kill round (the re-run does not), else train."""
        rnd = config.round
        victim = ("client-62", "client-37")[(rnd // KILL_EVERY) % 2]  # mid-subtree
        marker = self.marker_dir / f"tree-round-{rnd}"
        if rnd % KILL_EVERY == 0 and self.node_id == victim and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return DigitsClient.fit(self, parameters, config)


class HangingClient(DigitsClient):
    """client-7 sleeps 60 s in round 3."""

    def fit(
        self, parameters: Parameters, config: Instructions
    ) -> tuple[Parameters, int, dict[str, float]]:
        """Hang once, else train."""
        if self.node_id == "client-7" and config.round == HANG_ROUND:
            time.sleep(HANG_S)
        return super().fit(parameters, config)


class Restarts(Callback):
    """Keeps the restart events."""

    def __init__(self) -> None:
        self.events: list[WorkerRestarted] = []
        self.arrived: list[float] = []

    def on_event(self, event: Event) -> bool | None:
        if isinstance(event, WorkerRestarted):
            self.events.append(event)
            self.arrived.append(time.time())
        return super().on_event(event)


def run(
    client: Any, extra: dict[str, Any] | None = None, tree: bool = False, **kw: Any
) -> tuple[Any, ...]:
    """Train 20 rounds (a star, or with ``tree`` the hierarchy of (d)); (result, wall
    seconds, restart events, their arrival times)."""
    restarts = Restarts()
    kind: Any = StarFederation
    if tree:
        kind = partial(HierarchicalFederation, tree=relay_tree(1, 4, 5), clients_per_lcp=5)
    fed = kind(
        client,
        CLIENTS,
        initial_parameters=DigitsClient.initial_parameters(OPTIONS),
        options={**OPTIONS.model_dump(), **(extra or {})},
        evaluate_fn=central_evaluation(OPTIONS),
        resources=ResourcesConfig(num_workers=WORKERS),
        callbacks=[restarts],
        seed=0,
        **kw,
    )
    try:
        fed._start()  # workers start before the clock (their start is not a fault's cost)
        started = time.perf_counter()
        result = fed.train(ROUNDS)
        wall = time.perf_counter() - started
    finally:
        fed.stop()
    return result, wall, restarts.events, restarts.arrived


def identical(a: FederationResult, b: FederationResult) -> bool:
    """Whether two results' final parameters are bit-identical."""
    return a.parameters_equal(b)


def main() -> None:
    """Run the four federations and print the table."""
    from common import machine

    ensure_ray(None)  # the embedded Ray instance starts before anything is timed
    print(machine())
    print(f"{CLIENTS} digits clients x {ROUNDS} rounds, {WORKERS} workers, FedAvg")
    warm, _, _, _ = run(DigitsClient)  # warm-up: Ray's worker pool, imports, caches
    base, base_wall, _, _ = run(DigitsClient)
    print(f"two undisturbed runs bit-identical: {identical(warm, base)}")
    with tempfile.TemporaryDirectory() as markers:
        runs = {
            "(a) 10 % raising": run(RaisingClient),
            "(b) SIGKILL every 5 rounds": run(
                KillingClient, {"marker_dir": markers}, max_worker_restarts=ROUNDS
            ),
            "(c) hang 60 s, timeout 2 s": run(HangingClient, client_timeout=CLIENT_TIMEOUT),
        }
        tree_base = run(DigitsClient, tree=True)
        tree_killed = run(
            TreeKillingClient, {"marker_dir": markers}, tree=True, max_worker_restarts=ROUNDS
        )
        _, _, events, arrived = runs["(b) SIGKILL every 5 rounds"]
        kill_to_back = [
            at - (Path(markers) / f"round-{event.reason.split(':')[0].split()[1]}").stat().st_mtime
            for event, at in zip(events, arrived, strict=True)
        ]
    base_rounds = sum(r.seconds for r in base.history)
    print(
        f"\n{'run':28} {'wall s':>7} {'rounds s':>8} {'round 3 s':>9} {'accuracy':>8} "
        f"{'failures':>8} {'restarts':>8}  bit-identical"
    )
    rows = [("undisturbed", (base, base_wall, [], [])), *runs.items()]
    for name, (result, wall, events, _) in rows:
        rounds = sum(r.seconds for r in result.history)
        print(
            f"{name:28} {wall:7.2f} {rounds:8.2f} {result.history[2].seconds:9.2f} "
            f"{result.history[-1].accuracy:8.4f} {len(result.failures):8d} {len(events):8d}  "
            f"{identical(result, base)}"
        )
    killed, _, events, _ = runs["(b) SIGKILL every 5 rounds"]
    print("\n(b) restarts: worker, seconds from the loss being seen to the new process answering,")
    print("    and from the SIGKILL to the restart being reported (an upper bound of kill to back)")
    for event, total in zip(events, kill_to_back, strict=True):
        print(f"  worker {event.worker}: {event.seconds:.2f} s, {total:.2f} s ({event.reason})")
    extra = [
        killed.history[r - 1].seconds - base.history[r - 1].seconds
        for r in range(KILL_EVERY, ROUNDS + 1, KILL_EVERY)
    ]
    print(
        "(b) extra seconds of the kill rounds (loss seen + re-run): "
        + ", ".join(f"{s:.2f}" for s in extra)
    )
    _, wall_b, _, _ = runs["(b) SIGKILL every 5 rounds"]
    worst = max(kill_to_back, default=0.0)
    print(
        f"(b) total {wall_b:.2f} s vs undisturbed {base_wall:.2f} s + 4 x restart: "
        f"extra {wall_b - base_wall:.2f} s"
    )
    print(
        f"targets: restart < 3 s: {worst < 3}; (b) bit-identical: {identical(killed, base)}; "
        f"(c) round 3 <= {CLIENT_TIMEOUT + 1:g} s: "
        f"{runs['(c) hang 60 s, timeout 2 s'][0].history[2].seconds <= CLIENT_TIMEOUT + 1}"
    )
    print(f"undisturbed rounds total {base_rounds:.2f} s")
    print("\n(d) hierarchy, relay_tree(1, 4, 5): 4 subtrees of 25 clients, 2 per worker")
    for name, (result, wall, events, _) in (
        ("undisturbed", tree_base),
        ("SIGKILL every 5 rounds", tree_killed),
    ):
        rounds = sum(r.seconds for r in result.history)
        print(
            f"  {name:24} wall {wall:6.2f} s, rounds {rounds:6.2f} s, accuracy "
            f"{result.history[-1].accuracy:.4f}, failures {len(result.failures)}, restarts "
            f"{len(events)} (workers {[e.worker for e in events]}), bit-identical to the "
            f"undisturbed hierarchy: {identical(result, tree_base[0])}"
        )
    extra_tree = tree_killed[1] - tree_base[1]
    print(
        f"(d) total {tree_killed[1]:.2f} s vs undisturbed {tree_base[1]:.2f} s: extra "
        f"{extra_tree:.2f} s for {len(tree_killed[2])} restarts; restart seconds "
        + ", ".join(f"{e.seconds:.2f}" for e in tree_killed[2])
    )
    print(f"target (d) bit-identical: {identical(tree_killed[0], tree_base[0])}")
    for name, (result, _, _, _) in rows:
        print(f"{name:28} rounds: " + " ".join(f"{r.seconds:.2f}" for r in result.history))


if __name__ == "__main__":
    main()
