"""Shared by the bench scripts: the machine description and peak memory of the whole run."""

from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

import psutil

REPO = Path(__file__).resolve().parents[1]
"""The repository the bench scripts belong to (the "after" side of a comparison)."""


def baseline_tree(ref: str) -> tuple[str, Path]:
    """(short sha, folder) of a detached worktree of revision ``ref`` in /tmp (the "before"
    side of a comparison), made on first use."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = Path("/tmp") / f"redfl-baseline-{sha}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), sha], cwd=REPO, check=True)
    return sha, tree


def machine() -> str:
    """One line: CPU count, memory, Python, Ray and BLAS thread setting."""
    import ray

    memory = psutil.virtual_memory().total / 2**30
    return (
        f"machine: {os.cpu_count()} cores {platform.machine()}, {memory:.0f} GiB, "
        f"Python {platform.python_version()}, Ray {ray.__version__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )


def ray_processes() -> list[psutil.Process]:
    """This driver and every Ray worker process (``ray::...``) of this machine's session."""
    found = [psutil.Process()]
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if cmdline and cmdline[0].startswith("ray::"):
            found.append(process)
    return found


class PeakMemory:
    """Sample the summed RSS of the driver and the Ray workers every ``period`` seconds.

    Use as a context manager; ``peak_mb`` is the largest sum seen.
    """

    def __init__(self, period: float = 0.05) -> None:
        self.period = period
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> float:
        """The summed RSS now, in MB; raises the peak if larger."""
        total = 0
        for process in ray_processes():
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        self.peak_mb = max(self.peak_mb, total / 2**20)
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self.sample()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.sample()
        self._stop.set()
        self._thread.join()


def timed(function: object) -> float:
    """Seconds a call of ``function()`` takes."""
    start = time.perf_counter()
    function()  # type: ignore[operator]
    return time.perf_counter() - start
