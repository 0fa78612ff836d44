"""Where the time goes when Ray stops: Ray's own exit path against redfl's fast exit.

Each side runs in a fresh process: an embedded Ray instance is started, two actors run a
call each (so workers are up, as after a federation), then Ray is stopped and every step is
timed with timestamps around it:

- ``ray``: what a driver paid before, at interpreter exit: Ray's exit handler
  (``ray.shutdown(_exiting_interpreter=True)``), which sleeps 0.5 s, disconnects the driver,
  then ends each process kind in turn, sending SIGTERM and waiting up to 1 s for each.
- ``redfl``: :func:`redfl.runtime.embedded.leave_ray`: the idle helpers killed at once, then
  ``ray.shutdown()`` (the raylet, which ends its workers and agents, then the GCS).

Per side: the sleep, the driver's disconnect, each process kind Ray ends (in its order),
and the whole, best and median of ``--repeat`` processes, with the load average. Target:
the whole teardown after a run's final line <= 0.3 s (``bench/startup.py`` measures that on
whole processes; this script shows where it goes).

Run: ``python bench/teardown.py [--repeat 3]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import statistics
import subprocess
import sys

from common import REPO, machine

TARGET_S = 0.3
CHILD = r"""
import json, sys, time
import ray
import ray._private.node as node_module
import ray._private.worker as worker_module
from redfl.runtime.connect import FAULT_DETECTION, worker_path
from redfl.runtime.embedded import leave_ray, start_embedded

steps = []
original_kill = node_module.Node._kill_process_type
original_sleep = worker_module.time.sleep


def kill(self, process_type, *args, **kwargs):
    began = time.perf_counter()
    try:
        return original_kill(self, process_type, *args, **kwargs)
    finally:
        steps.append((f"end {process_type}", began, time.perf_counter()))


class Clock:
    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds):
        began = time.perf_counter()
        original_sleep(seconds)
        steps.append(("exit handler's sleep", began, time.perf_counter()))


node_module.Node._kill_process_type = kill
worker_module.time = Clock()
side = sys.argv[1]
start_embedded(worker_path(), FAULT_DETECTION)


@ray.remote(num_cpus=0)
class Echo:
    def ping(self):
        return 1


actors = [Echo.remote() for _ in range(2)]
assert ray.get([a.ping.remote() for a in actors]) == [1, 1]
del actors
began = time.perf_counter()
if side == "ray":
    ray.shutdown(_exiting_interpreter=True)
else:
    leave_ray()
ended = time.perf_counter()
print(json.dumps({"whole": ended - began, "began": began, "steps": steps}))
"""


def one(side: str) -> dict[str, float]:
    """One process: seconds per step of stopping Ray, and ``whole``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, side],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    durations: dict[str, float] = {}
    last = found["began"]
    for name, began, ended in found["steps"]:
        if began - last > 0.005:  # what ran between the timed steps
            durations[f"before {name}"] = durations.get(f"before {name}", 0.0) + began - last
        durations[name] = durations.get(name, 0.0) + ended - began
        last = ended
    durations["after the last step"] = found["began"] + found["whole"] - last
    durations["whole"] = found["whole"]
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    for side in ("ray", "redfl"):
        runs = []
        loads = []
        for _ in range(args.repeat):
            loads.append(os.getloadavg()[0])
            runs.append(one(side))
        print(
            f"\n{side}: seconds, best/median of {args.repeat} (load {min(loads):.2f}-"
            f"{max(loads):.2f})"
        )
        names = list(dict.fromkeys(name for run in runs for name in run))
        for name in names:
            values = [run.get(name, 0.0) for run in runs]
            print(f"  {name:<34} {min(values):6.3f} {statistics.median(values):6.3f}")
        whole = statistics.median(run["whole"] for run in runs)
        verdict = "met" if whole <= TARGET_S else "MISSED"
        print(f"  whole vs target <= {TARGET_S:g} s: {whole / TARGET_S:.2f} x ({verdict})")


if __name__ == "__main__":
    main()
