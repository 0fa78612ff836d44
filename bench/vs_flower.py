"""redfl against Flower's simulation on the digits softmax FedAvg workload, whole processes.

Flower's ``simulation`` extra pins its own Ray, so its side runs from a separate virtual
environment, ``.bench/flower-venv`` (git-ignored), which ``--setup`` creates with
``pip install 'flwr[simulation]' scikit-learn``; it is never a redfl dependency. Each side
runs as a whole process (``bench/flower_side.py`` and ``bench/redfl_side.py``) at
100 clients x 20 rounds and 1,000 clients x 3 rounds. Prints, per side, the whole-process
wall time and the training time (start of training to result, Ray's start excluded), both
final accuracies (must agree within 0.005), the ratios, and redfl's ``local`` runtime for
reference. Targets: training >= 20 x faster than Flower on both; whole process >= 6 x
faster at 100 x 20 and >= 15 x at 1,000 x 3. ``--workloads 300x10`` adds 300 clients x 10
rounds (whole process >= 12 x, training >= 14 x), where start-up and teardown dominate.

Run: ``python bench/vs_flower.py --setup`` once, then ``python bench/vs_flower.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLOWER_VENV = ROOT / ".bench" / "flower-venv"
FLOWER_PYTHON = FLOWER_VENV / "bin" / "python"
TARGETS = {(100, 20): (20.0, 6.0), (1000, 3): (20.0, 15.0), (300, 10): (14.0, 12.0)}


def setup() -> None:
    """Create Flower's virtual environment (network: the package registry only)."""
    subprocess.run([sys.executable, "-m", "venv", str(FLOWER_VENV)], check=True)
    pip = [str(FLOWER_PYTHON), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "flwr[simulation]", "scikit-learn", "numpy"], check=True)


def run(python: str, script: str, clients: int, rounds: int, *extra: str) -> tuple[float, Any]:
    """Run one side as a whole process; return its wall seconds and its JSON report (with
    the 1-min load average when it started, ``load``). redfl's side starts its own Ray
    instance, as Flower's does: a warm head of the user's is not used."""
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    env["REDFL_HEAD_DIR"] = str(ROOT / ".bench" / "no-warm-head")
    command = [python, str(ROOT / "bench" / script), "--clients", str(clients)]
    command += ["--rounds", str(rounds), *extra]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{script} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return wall, {**report, "load": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="create Flower's venv and exit")
    parser.add_argument("--workloads", nargs="+", default=["100x20", "1000x3"])
    args = parser.parse_args()
    if args.setup:
        setup()
        return
    if not FLOWER_PYTHON.exists():
        raise SystemExit(f"no Flower environment at {FLOWER_VENV}: run with --setup first")
    print(
        f"{'workload':>9} {'side':>12} {'whole s':>8} {'train s':>8} {'accuracy':>8} "
        f"{'whole x':>8} {'train x':>8} {'targets (train, whole)':>22} {'verdict':>18}  load"
    )
    for workload in args.workloads:
        clients, rounds = (int(v) for v in workload.split("x"))
        flower_wall, flower = run(str(FLOWER_PYTHON), "flower_side.py", clients, rounds)
        ours_wall, ours = run(sys.executable, "redfl_side.py", clients, rounds)
        local_wall, local = run(
            sys.executable, "redfl_side.py", clients, rounds, "--runtime", "local"
        )
        train_target, whole_target = TARGETS.get((clients, rounds), (20.0, 6.0))
        whole_x = flower_wall / ours_wall
        train_x = flower["train_seconds"] / ours["train_seconds"]
        agree = abs(flower["accuracy"] - ours["accuracy"]) <= 0.005
        verdict = ", ".join(
            [
                f"train {'met' if train_x >= train_target else 'MISS'}",
                f"whole {'met' if whole_x >= whole_target else 'MISS'}",
                f"acc {'ok' if agree else 'DIFFER'}",
            ]
        )
        rows = [
            ("flower", flower_wall, flower, "", "", ""),
            ("redfl ray", ours_wall, ours, f"{whole_x:.1f}", f"{train_x:.1f}", verdict),
            ("redfl local", local_wall, local, "", "", "reference"),
        ]
        for side, wall, report, wx, tx, text in rows:
            goal = f">= {train_target:g}x, >= {whole_target:g}x" if side == "redfl ray" else ""
            print(
                f"{workload:>9} {side:>12} {wall:>8.2f} {report['train_seconds']:>8.2f} "
                f"{report['accuracy']:>8.4f} {wx:>8} {tx:>8} {goal:>22} {text:>18}  "
                f"{report['load']:.2f}"
            )


if __name__ == "__main__":
    main()
