"""From command to result: how soon ``redfl run`` and a script reach their first round, their
final line and their exit, cold and warm.

Workloads: the demo (``redfl run examples/digits_fedavg.toml``: 100 clients x 20 rounds)
and a script that trains 300 digits clients for 10 rounds with the public API (a
``StarFederation`` used as a context manager, one line per round, then a final line).
Modes: ``cold`` (each process starts and stops its own embedded Ray instance) and ``warm``
(one head started with ``redfl head start``, joined by every run). Each (workload, mode)
runs ``--repeat`` whole processes (default 5): best and median of the time to the first
round's line, to the final line and to the process's exit, and of the teardown (exit minus
final line). Then the steps of the demo (``bench/startup_steps.py``, median of the
repeats): the interpreter's start, imports, config, Ray's start (or join), the workers,
the first round, the other rounds, stopping the federation, leaving Ray, the interpreter's
exit; and a worker's own imports, timed in a fresh process.

Targets (this machine, 2 cores, quiet): the demo's whole process <= 4.5 s cold and <= 2 s
warm; teardown after the final line <= 0.3 s. ``--baseline REF`` also times the cold demo
at revision ``REF`` (a detached worktree in /tmp), alternating with this code's. The load
average (1 min) is printed beside every figure: take figures when it is low.

Run: ``python bench/startup.py [--repeat 5] [--baseline ff6d616]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import REPO, baseline_tree, machine

DEMO = REPO / "examples" / "digits_fedavg.toml"
STEPS = REPO / "bench" / "startup_steps.py"
REDFL = str(Path(sys.executable).parent / "redfl")
TARGET_COLD_S = 4.5
TARGET_WARM_S = 2.0
TARGET_TEARDOWN_S = 0.3
SCRIPT = """
import numpy as np
from redfl import FedAvg, StarFederation
from redfl.examples.digits import DigitsClient, DigitsOptions

OPTIONS = DigitsOptions(partition="iid", tile=4, test_fraction=0.0, lr=0.1, epochs=5, batch_size=32)
CLIENTS, ROUNDS = 300, 10
federation = StarFederation(
    DigitsClient,
    CLIENTS,
    initial_parameters=DigitsClient.initial_parameters(OPTIONS),
    strategy=FedAvg(fraction_fit=1.0, min_fit_clients=CLIENTS),
    options=OPTIONS.model_dump(),
    seed=0,
)
with federation:
    for _ in range(ROUNDS):
        record = federation.train(1).history[-1]
        print(f"round {record.round} train loss {record.train_loss:.4f}", flush=True)
print(f"final {len(federation.history)} rounds", flush=True)
"""
WORKER_IMPORTS = (
    "import time; t = time.perf_counter(); import ray, redfl.runtime.ray_host, "
    "redfl.examples.digits; print(time.perf_counter() - t)"
)


@dataclass
class Timing:
    """One whole process: seconds from its start to its first round's line, its final
    line and its exit; the load average when it started."""

    first: float
    final: float
    exit: float
    load: float

    @property
    def teardown(self) -> float:
        """Seconds from the final line to the exit."""
        return self.exit - self.final


def load() -> float:
    return os.getloadavg()[0]


def environment(code: Path, head_dir: Path) -> dict[str, str]:
    """Runs import redfl from ``code`` and use the head in ``head_dir`` if one runs there."""
    drop = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        PYTHONPATH=str(code),
        OMP_NUM_THREADS="1",
        RAY_USAGE_STATS_ENABLED="0",
        REDFL_HEAD_DIR=str(head_dir),
    )
    return env


def whole_process(
    command: list[str], env: dict[str, str], cwd: Path, first: str, final: str
) -> Timing:
    """Run ``command``; when its lines containing ``first`` and ``final`` came, and its exit."""
    started_load = load()
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    seen: dict[str, float] = {}
    lines = []
    for line in process.stdout:
        now = time.perf_counter() - start
        lines.append(line)
        for key, marker in (("first", first), ("final", final)):
            if marker in line and key not in seen:
                seen[key] = now
    code = process.wait()
    ended = time.perf_counter() - start
    if code != 0 or len(seen) != 2:
        raise SystemExit(f"{' '.join(command)} failed ({code}):\n{''.join(lines)[-3000:]}")
    return Timing(seen["first"], seen["final"], ended, started_load)


def steps(env: dict[str, str], cwd: Path) -> dict[str, float]:
    """One run of ``bench/startup_steps.py`` on the demo: seconds per step."""
    spawned = time.time()
    done = subprocess.run(
        [sys.executable, str(STEPS), str(DEMO)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    ended = time.time()
    if done.returncode != 0:
        raise SystemExit(f"startup_steps.py failed:\n{done.stderr[-3000:]}")
    marks = json.loads(done.stdout.strip().splitlines()[-1])
    durations = {"interpreter start": marks[0][1] - spawned}
    for (_, before), (name, at) in itertools.pairwise(marks):
        durations[name.replace("_", " ")] = at - before
    durations["interpreter exit"] = ended - marks[-1][1]
    return durations


def row(name: str, timings: list[Timing], target: float | None) -> str:
    """best/median of each figure, the target and the ratio of the median to it."""

    def pair(values: list[float]) -> str:
        return f"{min(values):5.2f}/{statistics.median(values):5.2f}"

    whole = statistics.median(t.exit for t in timings)
    teardown = [t.teardown for t in timings]
    goal = "" if target is None else f"<= {target:g}"
    ratio = "" if target is None else f"{whole / target:.2f}"
    verdict = "" if target is None else ("met" if whole <= target else "MISSED")
    teardown_verdict = "met" if statistics.median(teardown) <= TARGET_TEARDOWN_S else "MISSED"
    loads = [t.load for t in timings]
    return (
        f"{name:<22} {pair([t.first for t in timings]):>12} {pair([t.final for t in timings]):>12} "
        f"{pair([t.exit for t in timings]):>12} {pair(teardown):>12} {teardown_verdict:>7} "
        f"{goal:>7} {ratio:>6} {verdict:>7}  {min(loads):.2f}-{max(loads):.2f}"
    )


def head(command: str, env: dict[str, str], head_dir: Path) -> None:
    done = subprocess.run(
        [REDFL, "head", command, "--dir", str(head_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise SystemExit(f"redfl head {command} failed: {done.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline", help="also time the cold demo at this git revision")
    args = parser.parse_args()
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="redfl-startup-"))
    (work / "script.py").write_text(SCRIPT, encoding="utf-8")
    cold_env = environment(REPO, work / "no-head")
    warm_dir = work / "head"
    warm_env = environment(REPO, warm_dir)

    def demo(env: dict[str, str], code: Path = REPO) -> Timing:
        out = work / f"run-{time.monotonic_ns()}"
        command = [REDFL, "run", str(code / "examples" / "digits_fedavg.toml"), "--out", str(out)]
        return whole_process(command, env, work, "round 1/", "final accuracy")

    def script(env: dict[str, str]) -> Timing:
        return whole_process([sys.executable, "script.py"], env, work, "round 1 ", "final ")

    results: list[tuple[str, list[Timing], float | None]] = []
    cold: list[Timing] = []
    if args.baseline:  # alternating processes: both sides see the same load
        sha, tree = baseline_tree(args.baseline)
        base_env = environment(tree, work / "no-head")
        before: list[Timing] = []
        for _ in range(args.repeat):
            before.append(demo(base_env, tree))
            cold.append(demo(cold_env))
        results.append((f"demo cold @{sha}", before, None))
    else:
        cold = [demo(cold_env) for _ in range(args.repeat)]
    results.append(("demo cold", cold, TARGET_COLD_S))
    results.append(("script 300x10 cold", [script(cold_env) for _ in range(args.repeat)], None))
    head("start", warm_env, warm_dir)
    try:
        results.append(("demo warm", [demo(warm_env) for _ in range(args.repeat)], TARGET_WARM_S))
        results.append(("script 300x10 warm", [script(warm_env) for _ in range(args.repeat)], None))
        warm_steps = [steps(warm_env, work) for _ in range(args.repeat)]
    finally:
        head("stop", warm_env, warm_dir)
    cold_steps = [steps(cold_env, work) for _ in range(args.repeat)]

    print(f"\nseconds, best/median of {args.repeat} whole processes; load = 1-min load average")
    print(
        f"{'':<22} {'first round':>12} {'final line':>12} {'exit':>12} {'teardown':>12} "
        f"{'<=0.3 s':>7} {'target':>7} {'ratio':>6} {'verdict':>7}  load"
    )
    for name, timings, target in results:
        print(row(name, timings, target))

    worker = []
    for _ in range(args.repeat):
        done = subprocess.run(
            [sys.executable, "-c", WORKER_IMPORTS], env=cold_env, capture_output=True, text=True
        )
        worker.append(float(done.stdout.strip()))
    print(f"\ndemo steps, median of {args.repeat} (seconds)")
    print(f"{'step':<20} {'cold':>7} {'warm':>7}")
    for name in cold_steps[0]:
        cold_s = statistics.median(s[name] for s in cold_steps)
        warm_s = statistics.median(s[name] for s in warm_steps)
        print(f"{name:<20} {cold_s:7.3f} {warm_s:7.3f}")
    print(
        f"{'total':<20} {statistics.median(sum(s.values()) for s in cold_steps):7.3f} "
        f"{statistics.median(sum(s.values()) for s in warm_steps):7.3f}"
    )
    print(
        f"a worker's imports (ray, redfl's host, the digits client) in a fresh process: "
        f"{statistics.median(worker):.3f} s (load {load():.2f})"
    )


if __name__ == "__main__":
    main()
