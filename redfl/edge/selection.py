"""Device selection for an edge job: who gets a task, refilled as slots free up.

The server keeps up to ``device_selection_size`` selected devices. A device becomes a
candidate when it asks for a task (its LCP offers it). A slot frees up when its device
reports or when it has not reported within ``device_timeout`` seconds (it is evicted); once
at least ``min_hole_to_fill`` slots are free, they are refilled from the candidates, either
balanced across LCPs (the LCP with the fewest selected devices first, its longest-waiting
candidate) or uniformly at random (seeded). With ``device_reuse`` a device that reported
may be selected again when it asks again, so a small pool never stalls; without it, a device
is selected at most once per job, and :attr:`Selector.exhausted` says when every device that
asked has been used and none is left. Time comes from an injectable clock.

Selections are kept per LCP, each with its own epoch (bumped when that LCP's set changes), so
a sync carries only the sets of the LCPs whose selection changed, and only to the LCPs (or
the relay above them) that hold those devices: a fleet's selection never travels whole. A
selected device that asks through another LCP (its own is down) moves there with its slot.
Every operation is O(1) in the number of devices (a refill is O(LCPs) per pick), so the time
per sync does not grow with the fleet.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

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


class _Pool:
    """An LCP's candidates: O(1) add, discard, oldest-first and uniformly random picks.

    A list with each device's position (random picks swap the last into the hole) and a
    queue of arrivals, from which devices no longer in the pool are skipped lazily.
    """

    __slots__ = ("_arrivals", "_items", "_position")

    def __init__(self) -> None:
        self._items: list[str] = []
        self._position: dict[str, int] = {}
        self._arrivals: deque[str] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Any:
        return (d for d in self._arrivals if d in self._position)

    def add(self, device: str) -> None:
        if device not in self._position:
            self._position[device] = len(self._items)
            self._items.append(device)
            self._arrivals.append(device)

    def discard(self, device: str) -> None:
        index = self._position.pop(device, None)
        if index is None:
            return
        last = self._items.pop()
        if last != device:
            self._items[index] = last
            self._position[last] = index
        if len(self._arrivals) > 2 * len(self._items) + 64:  # drop skipped entries
            self._arrivals = deque(d for d in self._arrivals if d in self._position)

    def oldest(self) -> str:
        while self._arrivals[0] not in self._position:
            self._arrivals.popleft()
        device = self._arrivals.popleft()
        self.discard(device)
        return device

    def at(self, index: int) -> str:
        device = self._items[index]
        self.discard(device)
        return device


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
        self.by_lcp: dict[str, dict[str, None]] = {}  # lcp -> its selected devices
        self.epochs: Counter[str] = Counter()  # lcp -> bumped when its selection changes
        self.candidates: dict[str, _Pool] = {}
        self.used: set[str] = set()  # without device_reuse only
        self.evicted = 0
        self._names: dict[str, str] = {}  # one string per LCP name
        self._rng = random.Random(config.seed)

    def offer(self, device_id: str, lcp: str) -> None:
        """Record that ``device_id`` asked for a task at ``lcp``; a selected device that asks
        through another LCP moves there with its slot."""
        lcp = self._names.setdefault(lcp, lcp)
        if device_id in self.selected:
            old = self.lcp_of[device_id]
            if old != lcp:
                self._unselect(device_id, old)
                self._select(device_id, lcp)
                self.lcp_of[device_id] = lcp
            return
        if not self.config.device_reuse and device_id in self.used:
            return
        previous = self.lcp_of.get(device_id)
        if previous is not None and previous != lcp:
            self.candidates[previous].discard(device_id)
        self.lcp_of[device_id] = lcp
        pool = self.candidates.get(lcp)
        if pool is None:
            pool = self.candidates[lcp] = _Pool()
        pool.add(device_id)

    def is_selected(self, device_id: str) -> bool:
        """Whether the device holds a slot."""
        return device_id in self.selected

    def reported(self, device_id: str) -> bool:
        """Free the device's slot after it reported; False if it held none."""
        if not self.config.device_reuse:
            self.used.add(device_id)
        if self.selected.pop(device_id, None) is None:
            return False
        self._unselect(device_id, self.lcp_of[device_id])
        return True

    def of_lcp(self, lcp: str) -> tuple[int, list[str]]:
        """The epoch of ``lcp``'s selection and its selected devices."""
        return self.epochs[lcp], list(self.by_lcp.get(lcp, ()))

    @property
    def exhausted(self) -> bool:
        """Without ``device_reuse``: nobody is selected and no candidate is left."""
        if self.config.device_reuse or self.selected:
            return False
        return not any(self.candidates.values())

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
            self._unselect(device, self.lcp_of[device])
        self.evicted += len(late)
        holes = self.config.device_selection_size - len(self.selected)
        if holes >= self.config.min_hole_to_fill:
            self._fill(holes, now)
        return late

    def clear(self) -> None:
        """Deselect everyone (a job that ended)."""
        for device in list(self.selected):
            del self.selected[device]
            self._unselect(device, self.lcp_of[device])

    def _select(self, device: str, lcp: str) -> None:
        self.load[lcp] += 1
        self.by_lcp.setdefault(lcp, {})[device] = None
        self.epochs[lcp] += 1

    def _unselect(self, device: str, lcp: str) -> None:
        self.load[lcp] -= 1
        self.by_lcp[lcp].pop(device, None)
        self.epochs[lcp] += 1

    def _fill(self, holes: int, now: float) -> None:
        """Select up to ``holes`` candidates."""
        deadline = now + self.config.device_timeout
        for _ in range(holes):
            device = self._pick()
            if device is None:
                return
            self.selected[device] = deadline
            self._select(device, self.lcp_of[device])

    def _pick(self) -> str | None:
        """Remove and return the next candidate, or None when there is none."""
        pools = [(lcp, pool) for lcp, pool in self.candidates.items() if pool]
        if not pools:
            return None
        if self.config.method == "random":
            index = self._rng.randrange(sum(len(pool) for _, pool in pools))
            for _, pool in pools:
                if index < len(pool):
                    return pool.at(index)
                index -= len(pool)
        _, pool = min(pools, key=lambda item: (self.load[item[0]], item[0]))
        return pool.oldest()

    def state(self) -> dict[str, Any]:
        """What :meth:`restore` needs, JSON-ready (deadlines as seconds left)."""
        now = self.clock()
        return {
            "selected": [[d, self.lcp_of[d], max(0.0, t - now)] for d, t in self.selected.items()],
            "candidates": {lcp: list(pool) for lcp, pool in self.candidates.items() if pool},
            "used": sorted(self.used),
            "evicted": self.evicted,
            "rng": _json_rng(self._rng.getstate()),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take a :meth:`state` back (the selected keep the time they had left)."""
        now = self.clock()
        for device, lcp, left in state["selected"]:
            lcp = self._names.setdefault(lcp, lcp)
            self.selected[device] = now + float(left)
            self.lcp_of[device] = lcp
            self._select(device, lcp)
        for lcp, devices in state["candidates"].items():
            for device in devices:
                self.offer(device, lcp)
        self.used = set(state["used"])
        self.evicted = int(state["evicted"])
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))


def _json_rng(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]
