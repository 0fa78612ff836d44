"""Secure aggregation in a federation on Ray: redfl's secure round against its plain round
and against Flower 1.42's ``SecAggPlusWorkflow``.

For (clients, parameters) = (20, 10k), (50, 10k), (100, 10k) and (50, 100k), every client
samples every round and returns the global parameters plus a little seeded noise
(``redfl.examples.echo:JitterClient``; Flower's clients, ``bench/flower_secagg.py``, draw
the same updates), so the protocol's cost is what is measured. Per row:

- redfl plain and redfl secure (``[secure_aggregation]`` with its defaults): the median
  seconds of a round on Ray (rounds 2 to ``--rounds``), and the secure round's overhead
  (target at 100 x 10k: at most 3 x the plain round);
- Flower secure (``SecAggPlusWorkflow``, ``num_shares = k + 1`` and the threshold redfl
  chose, Flower's default quantisation) in its simulation, from Flower's virtual
  environment (``python bench/vs_flower.py --setup`` builds it): the median seconds of a
  round after the first, and redfl's speed-up (target: at least 10 x on every row);
- each secure side's largest absolute difference from redfl's plain FedAvg model.

Then (100, 10k) with 10 % of the clients dropping after masking (silent at unmasking:
their inputs are in the sum, the server rebuilds nothing more), against the same plain
model. Prints the load average before and after.

Run: ``python bench/secagg.py`` (``--no-flower`` for redfl alone). ``--sites 10``
measures instead one row at sites: 10 site processes (``redfl site run``, jitter clients of
10,000 parameters, mutual TLS on 127.0.0.1), the plain and the secure round.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import json
import logging
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from common import machine

from redfl import FedAvg, StarFederation
from redfl.core.events import Event, SecureAggregationStage
from redfl.core.result import FederationResult
from redfl.examples.echo import JitterClient
from redfl.privacy.secagg import STAGES, SecureAggregationConfig
from redfl.schemas.callbacks import Callback

ROOT = Path(__file__).resolve().parent.parent
JITTER = "redfl.examples.echo:JitterClient"
FLOWER_PYTHON = ROOT / ".bench" / "flower-venv" / "bin" / "python"
CASES = [(20, 10_000), (50, 10_000), (100, 10_000), (50, 100_000)]
SPEEDUP_TARGET = 10.0
OVERHEAD_TARGET = 3.0
OVERHEAD_CASE = (100, 10_000)


def federation(
    clients: int, size: int, secure: int, runtime: str = "ray", **settings: Any
) -> StarFederation:
    """The bench's star: every client every round; ``secure``: the bits of the secure
    ring (0: plain rounds); ``settings``: more of the federation's (client ids, sites)."""
    return StarFederation(
        JitterClient,
        clients,
        initial_parameters=JitterClient.initial_parameters(size),
        strategy=FedAvg(min_fit_clients=clients),
        options={"size": size},
        secure_aggregation=SecureAggregationConfig(modulus_bits=secure) if secure else None,
        seed=0,
        runtime=runtime,
        **settings,
    )


class Stages(Callback):
    """Each secure stage's seconds (as the driver saw them), by stage, round after round."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}

    def on_event(self, event: Event) -> bool | None:
        if isinstance(event, SecureAggregationStage) and event.round > 1:
            self.seconds.setdefault(event.stage, []).append(event.seconds)
        return None


def redfl_rounds(
    clients: int, size: int, rounds: int, secure: int, silent: int = 0
) -> tuple[float, FederationResult, dict[str, float]]:
    """Median seconds of rounds 2..``rounds``, the result and the last round's metrics
    (with, secure, ``stage/<stage>``: the median seconds of each stage from round 2 on,
    and ``worker/<stage>``: the workers' summed seconds of client work per round);
    ``secure``: the bits of the secure ring (0: plain); ``silent`` clients stop
    answering after masking (secure only)."""
    fed = federation(clients, size, secure)
    stages = Stages()
    fed.callbacks.append(stages)
    if silent and fed.secure is not None:
        fed.secure.silent = {"unmasking": frozenset(f"client-{i}" for i in range(silent))}
    with fed:
        result = fed.train(rounds)
        work = fed.worker_stats()
    seconds = [r.seconds for r in result.history[1:]] or [result.history[0].seconds]
    metrics = dict(result.history[-1].metrics)
    for stage, spent in stages.seconds.items():
        metrics[f"stage/{stage}"] = statistics.median(spent)
        total = sum(w.get(f"secagg_{stage}_seconds", 0.0) for w in work)
        metrics[f"worker/{stage}"] = total / rounds
    return statistics.median(seconds), result, metrics


def flower_round(
    clients: int, size: int, rounds: int, neighbours: int, threshold: int
) -> tuple[float, np.ndarray]:
    """Flower's median secure round and final parameters (a whole process of its own)."""
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "flower.npy")
        command = [
            str(FLOWER_PYTHON),
            str(ROOT / "bench" / "flower_secagg.py"),
            *("--clients", str(clients), "--size", str(size), "--rounds", str(rounds)),
            *("--secure", "--neighbours", str(neighbours), "--threshold", str(threshold)),
            *("--out", out),
        ]
        env = dict(os.environ, OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise SystemExit(f"flower_secagg.py failed ({done.returncode}):\n{done.stderr[-3000:]}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        return float(report["round_seconds"]), np.load(out)


def sites_row(count: int, rounds: int, bits: int) -> None:
    """``count`` site processes (``redfl site run``, jitter clients of ``SIZE`` parameters,
    mutual TLS on 127.0.0.1): the median plain and secure rounds, the secure one's
    overhead and its largest difference from the plain model."""
    from sites import SIZE, provision, site_process, table

    names = [f"site-{i:02d}" for i in range(count)]
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        home, port = provision(folder, names)
        sites = [site_process(folder, n, client=JITTER) for n in names]
        try:
            rounds_ms, models = [], []
            for secure in (0, bits):
                settings = {"client_ids": names, "sites": table(home, port, names)}
                with federation(count, SIZE, secure, "sites", **settings) as fed:
                    result = fed.train(rounds)
                assert result.parameters is not None
                seconds = [r.seconds for r in result.history[1:]]
                rounds_ms.append(statistics.median(seconds) * 1e3)
                models.append(result.parameters["w"])
        finally:
            for site in sites:
                site.kill()
    diff = float(np.abs(models[1] - models[0]).max())
    print(
        f"{count} sites x {SIZE:,} (site processes, mutual TLS): plain {rounds_ms[0]:.1f} ms, "
        f"secure {rounds_ms[1]:.1f} ms a round ({rounds_ms[1] / rounds_ms[0]:.2f}x), "
        f"max|d| from plain FedAvg {diff:.2e}; {load()}",
        flush=True,
    )


def load() -> str:
    """The load average, one line."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="redfl rounds per side")
    parser.add_argument("--flower-rounds", type=int, default=3, help="Flower rounds")
    parser.add_argument("--no-flower", action="store_true", help="redfl alone")
    parser.add_argument("--cases", nargs="+", default=[f"{c}x{s}" for c, s in CASES])
    parser.add_argument(
        "--modulus-bits", type=int, choices=[32, 64], default=64, help="the secure ring"
    )
    parser.add_argument(
        "--sites", type=int, default=0, help="only the row of this many site processes"
    )
    args = parser.parse_args()
    if args.sites:
        print(machine())
        print(load())
        sites_row(args.sites, args.rounds, args.modulus_bits)
        return
    if not args.no_flower and not FLOWER_PYTHON.exists():
        raise SystemExit("no Flower environment: run python bench/vs_flower.py --setup first")
    import ray

    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    print(machine())
    print(f"secure rounds modulo 2^{args.modulus_bits}")
    print(load())
    print(
        f"{'clients x params':>17} {'k':>3} {'t':>3} {'plain ms':>9} {'secure ms':>10} "
        f"{'overhead':>9} {'flower ms':>10} {'speed-up':>9} {'max|d| redfl':>13} "
        f"{'max|d| flower':>14}  verdict"
    )
    splits: list[tuple[str, dict[str, float]]] = []
    for case in args.cases:
        clients, size = (int(v) for v in case.split("x"))
        plain, reference, _ = redfl_rounds(clients, size, args.rounds, 0)
        secure, result, metrics = redfl_rounds(clients, size, args.rounds, args.modulus_bits)
        assert reference.parameters is not None and result.parameters is not None
        k, t = int(metrics["secagg/neighbours"]), int(metrics["secagg/threshold"])
        ours_diff = float(np.abs(result.parameters["w"] - reference.parameters["w"]).max())
        overhead = secure / plain
        verdicts = []
        if (clients, size) == OVERHEAD_CASE:
            verdicts.append(f"overhead {'met' if overhead <= OVERHEAD_TARGET else 'MISS'}")
        flower_text, speed_text, flower_diff = "-", "-", "-"
        if not args.no_flower:
            flower, flower_final = flower_round(clients, size, args.flower_rounds, k, t)
            # Flower ran fewer rounds: compare with redfl's plain model after as many.
            plain_then = _plain_after(clients, size, args.flower_rounds)
            flower_diff = f"{float(np.abs(flower_final - plain_then).max()):.2e}"
            speedup = flower / secure
            flower_text, speed_text = f"{flower * 1e3:.0f}", f"{speedup:.1f}x"
            verdicts.append(f"speed-up {'met' if speedup >= SPEEDUP_TARGET else 'MISS'}")
        print(
            f"{case:>17} {k:>3} {t:>3} {plain * 1e3:>9.1f} {secure * 1e3:>10.1f} "
            f"{overhead:>8.2f}x {flower_text:>10} {speed_text:>9} {ours_diff:>13.2e} "
            f"{flower_diff:>14}  {', '.join(verdicts) or '-'}",
            flush=True,
        )
        splits.append((case, metrics))
    print("where a secure round's time goes (driver's wall ms per stage, median from round 2;")
    print("  in brackets the workers' summed ms of client work; advertise_keys includes the fit):")
    for case, metrics in splits:
        parts = [
            f"{s} {metrics[f'stage/{s}'] * 1e3:.1f} ({metrics[f'worker/{s}'] * 1e3:.1f})"
            for s in STAGES
        ]
        print(f"  {case:>9}: " + ", ".join(parts))
    clients, size = OVERHEAD_CASE
    silent = clients // 10
    plain, reference, _ = redfl_rounds(clients, size, args.rounds, 0)
    secure, result, metrics = redfl_rounds(clients, size, args.rounds, args.modulus_bits, silent)
    assert reference.parameters is not None and result.parameters is not None
    diff = float(np.abs(result.parameters["w"] - reference.parameters["w"]).max())
    print(
        f"{clients} x {size:,} with {silent} clients dropping after masking: secure "
        f"{secure * 1e3:.1f} ms a round ({secure / plain:.2f}x the plain {plain * 1e3:.1f} ms), "
        f"survivors {int(metrics['secagg/survivors'])}, max|d| from plain FedAvg {diff:.2e}"
    )
    print(load())


def _plain_after(clients: int, size: int, rounds: int) -> np.ndarray:
    """redfl's plain FedAvg model after ``rounds`` rounds, in-process (the oracle)."""
    with federation(clients, size, 0, "local") as fed:
        result = fed.train(rounds)
    assert result.parameters is not None
    return result.parameters["w"]


if __name__ == "__main__":
    main()
