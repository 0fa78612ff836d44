"""Device selection for an edge job: who gets a task, refilled as slots free up.

The server keeps up to ``device_selection_size`` selected devices. A device becomes a
candidate when it asks for a task (its LCP offers it). A slot frees up when its device
reports or when it has not reported within ``device_timeout`` seconds (it is evicted); once
at least ``min_hole_to_fill`` slots are free, they are refilled from the candidates, either
balanced across LCPs (the LCP with the fewest selected devices first, its longest-waiting
candidate) or uniformly at random (seeded). With ``device_reuse`` a device that reported
may be selected again when it asks again, so a small pool never stalls; without it, a device
is selected at most once per job. Time comes from an injectable clock.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["SelectionConfig", "Selector"]


@dataclass(frozen=True)
class SelectionConfig:
    """Selection parameters.

    Parameters
    ----------
    device_selection_size : int, default 50
        Devices selected at a time, >= 1.
    min_hole_to_fill : int, default 1
        Free slots needed before a refill, in ``1 .. device_selection_size``.
    device_reuse : bool, default True
        Whether a device that reported may be selected again.
    device_timeout : float, default 30.0
        Seconds a selected device has to report before it is evicted, > 0.
    method : {"balanced", "random"}, default "balanced"
        Balanced across LCPs, or uniform random among candidates.
    seed : int, default 0
        Seed of the random method.
    """

    device_selection_size: int = 50
    min_hole_to_fill: int = 1
    device_reuse: bool = True
    device_timeout: float = 30.0
    method: Literal["balanced", "random"] = "balanced"
    seed: int = 0

    def __post_init__(self) -> None:
        size = self.device_selection_size
        if size < 1:
            raise ValueError(f"device_selection_size must be >= 1, got {size}")
        if not 1 <= self.min_hole_to_fill <= size:
            raise ValueError(
                f"min_hole_to_fill must be in [1, {size}], got {self.min_hole_to_fill}"
            )
        if not 0 < self.device_timeout < math.inf:
            raise ValueError(f"device_timeout must be > 0, got {self.device_timeout}")
        if self.method not in ("balanced", "random"):
            raise ValueError(f"method must be 'balanced' or 'random', got {self.method!r}")


class Selector:
    """The selected devices of one job, their deadlines, and the candidates.

    Parameters
    ----------
    config : SelectionConfig
        Selection parameters.
    clock : Callable[[], float], default time.monotonic
        Source of the current time in seconds.
    """

    def __init__(
        self, config: SelectionConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.clock = clock
        self.selected: dict[str, float] = {}  # device -> deadline, in deadline order
        self.lcp_of: dict[str, str] = {}
        self.load: Counter[str] = Counter()  # lcp -> its selected devices
        self.candidates: dict[str, OrderedDict[str, None]] = {}  # lcp -> devices, oldest first
        self.used: set[str] = set()
        self.evicted = 0
        self.epoch = 0  # bumped whenever the selected set changes
        self._rng = random.Random(config.seed)

    def offer(self, device_id: str, lcp: str) -> None:
        """Record that ``device_id`` asked for a task at ``lcp`` (no-op when selected)."""
        if device_id in self.selected or (not self.config.device_reuse and device_id in self.used):
            return
        old = self.lcp_of.get(device_id)
        if old is not None and old != lcp:
            self.candidates.get(old, OrderedDict()).pop(device_id, None)
        self.lcp_of[device_id] = lcp
        self.candidates.setdefault(lcp, OrderedDict())[device_id] = None

    def is_selected(self, device_id: str) -> bool:
        """Whether the device holds a slot."""
        return device_id in self.selected

    def reported(self, device_id: str) -> bool:
        """Free the device's slot after it reported; False if it held none."""
        self.used.add(device_id)
        if self.selected.pop(device_id, None) is None:
            return False
        self.load[self.lcp_of[device_id]] -= 1
        self.epoch += 1
        return True

    def tick(self) -> list[str]:
        """Evict devices past their deadline, refill holes, and return the evicted ids.

        Every selection gets ``now + device_timeout`` from a clock that does not go back, so
        ``selected`` is in deadline order and the scan stops at the first device still in time.
        """
        now = self.clock()
        late = []
        for device, deadline in self.selected.items():
            if deadline > now:
                break
            late.append(device)
        for device in late:
            del self.selected[device]
            self.load[self.lcp_of[device]] -= 1
        self.evicted += len(late)
        if late:
            self.epoch += 1
        holes = self.config.device_selection_size - len(self.selected)
        if holes >= self.config.min_hole_to_fill:
            self._fill(holes, now)
        return late

    def _fill(self, holes: int, now: float) -> None:
        """Select up to ``holes`` candidates."""
        deadline = now + self.config.device_timeout
        for _ in range(holes):
            device = self._pick()
            if device is None:
                return
            self.selected[device] = deadline
            self.load[self.lcp_of[device]] += 1
            self.epoch += 1

    def _pick(self) -> str | None:
        """Remove and return the next candidate, or None when there is none."""
        pools = [(lcp, pool) for lcp, pool in self.candidates.items() if pool]
        if not pools:
            return None
        if self.config.method == "random":
            sizes = [len(pool) for _, pool in pools]
            index = self._rng.randrange(sum(sizes))
            for _, pool in pools:
                if index < len(pool):
                    device = next(d for i, d in enumerate(pool) if i == index)
                    del pool[device]
                    return device
                index -= len(pool)
        _, pool = min(pools, key=lambda item: (self.load[item[0]], item[0]))
        return pool.popitem(last=False)[0]
