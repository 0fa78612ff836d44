"""FedBuff: buffered asynchronous aggregation with staleness weights.

Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation", AISTATS 2022.
Devices train from whatever model version they were given and report a delta
``local - base``. LCPs fold the deltas per base version ``v`` into a partial sum
``S_v = sum_i n_i * delta_i`` with weight ``W_v = sum_i n_i`` (``n_i`` the device's sample
count, 1 for the numeric task) and send the partial sums up. The server adds them to its
buffer and, once it holds at least ``num_updates_for_model`` updates, makes a new version::

    new = global + global_lr * sum_v w_v * S_v / sum_v W_v
    w_v = 1 / (1 + sqrt(current - v))  if staleness_weight else 1

With unit weights ``sum_v W_v`` is the number of buffered updates ``N``. A partial sum is
never split, so a version may fold a few more than ``num_updates_for_model`` updates (the
division uses the true total). Updates based on a version older than
``current - max_model_history`` are rejected on arrival with a reason; the job ends when the
version reaches ``max_model_version``. Every update carries a task id; an id is folded at
most once: a partial sum whose ids were all folded before is acknowledged again without being
folded (a retry whose first answer was lost), one that repeats only some of them is refused.
The state (model, version, buffer, counters) can be taken out and put back
(:meth:`FedBuff.state`, :meth:`FedBuff.restore`) to persist a job.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FedBuff", "FedBuffConfig", "LcpBuffer", "PartialSum", "Verdict", "staleness_weight"]

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class FedBuffConfig:
    """FedBuff's server parameters.

    Parameters
    ----------
    num_updates_for_model : int, default 50
        Updates the server buffers before it makes a new version, >= 1.
    max_model_version : int, default 5
        The job ends when the version reaches this number (version 0 is the initial model), >= 1.
    max_model_history : int, default 3
        An update based on version ``v`` is accepted while ``current - v <= max_model_history``.
    global_lr : float, default 1.0
        Server learning rate, > 0.
    staleness_weight : bool, default True
        Weight a base version ``v`` by ``1 / (1 + sqrt(current - v))``; else by 1.
    """

    num_updates_for_model: int = 50
    max_model_version: int = 5
    max_model_history: int = 3
    global_lr: float = 1.0
    staleness_weight: bool = True

    def __post_init__(self) -> None:
        for name in ("num_updates_for_model", "max_model_version"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_model_history < 0:
            raise ValueError(f"max_model_history must be >= 0, got {self.max_model_history}")
        if not 0 < self.global_lr < math.inf:
            raise ValueError(f"global_lr must be > 0 and finite, got {self.global_lr}")


def staleness_weight(current: int, base: int, enabled: bool = True) -> float:
    """Return FedBuff's weight ``1 / (1 + sqrt(current - base))`` (1 when disabled).

    >>> staleness_weight(4, 0)
    0.3333333333333333
    """
    return 1.0 / (1.0 + math.sqrt(current - base)) if enabled else 1.0


@dataclass(frozen=True)
class PartialSum:
    """The folded updates of one base version, as an LCP sends them up.

    Parameters
    ----------
    base_version : int
        Version the devices trained from.
    sums : dict[str, np.ndarray]
        ``sum_i n_i * delta_i`` per array name (float64).
    weight : float
        ``sum_i n_i``.
    task_ids : tuple[str, ...]
        The folded tasks, one per update.
    """

    base_version: int
    sums: Arrays
    weight: float
    task_ids: tuple[str, ...]

    @property
    def count(self) -> int:
        """Number of folded updates."""
        return len(self.task_ids)


@dataclass(frozen=True)
class Verdict:
    """The server's answer to one partial sum: accepted, or rejected with a reason."""

    accepted: bool
    reason: str = ""
    new_version: bool = False


@dataclass
class LcpBuffer:
    """An LCP's per-version buffer of device updates, de-duplicated by task id."""

    sums: dict[int, Arrays] = field(default_factory=dict)
    weights: dict[int, float] = field(default_factory=dict)
    tasks: dict[int, list[str]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def add(
        self, task_id: str, base_version: int, delta: Mapping[str, np.ndarray], n: float
    ) -> bool:
        """Fold ``n * delta`` into the buffer of ``base_version``; False if the task was seen."""
        if task_id in self.seen:
            return False
        self.seen.add(task_id)
        acc = self.sums.get(base_version)
        if acc is None:
            self.sums[base_version] = {k: n * np.asarray(v, np.float64) for k, v in delta.items()}
        else:
            for k, v in delta.items():
                acc[k] += n * np.asarray(v, np.float64)
        self.weights[base_version] = self.weights.get(base_version, 0.0) + n
        self.tasks.setdefault(base_version, []).append(task_id)
        return True

    def drain(self) -> list[PartialSum]:
        """Return one partial sum per base version (ascending) and empty the buffer."""
        out = [
            PartialSum(v, self.sums[v], self.weights[v], tuple(self.tasks[v]))
            for v in sorted(self.sums)
        ]
        self.sums, self.weights, self.tasks = {}, {}, {}
        return out


class FedBuff:
    """The server side of FedBuff: the global model, its version and the buffer.

    Parameters
    ----------
    config : FedBuffConfig
        Aggregation parameters.
    parameters : Mapping[str, np.ndarray]
        Initial global model (version 0); copied to float32.
    """

    def __init__(self, config: FedBuffConfig, parameters: Mapping[str, np.ndarray]) -> None:
        self.config = config
        self.parameters: Arrays = {k: np.array(v, np.float32) for k, v in parameters.items()}
        self.version = 0
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.accepted_ids: set[str] = set()
        self._sums: dict[int, Arrays] = {}
        self._weights: dict[int, float] = {}
        self._count = 0
        self.stopped = ""  # why no more updates are taken (an aborted job), if so
        self.folded_last = 0  # updates the last version folded

    @property
    def done(self) -> bool:
        """True once the version has reached ``max_model_version``."""
        return self.version >= self.config.max_model_version

    @property
    def buffered(self) -> int:
        """Updates in the buffer, waiting for the next version."""
        return self._count

    def stop(self, reason: str) -> None:
        """Take no more updates: every later one is refused with ``reason``."""
        self.stopped = reason

    def submit(self, partial: PartialSum) -> Verdict:
        """Check a partial sum, buffer it, and make a new version when the buffer is full."""
        if partial.task_ids and self.accepted_ids.issuperset(partial.task_ids):
            return Verdict(True, "already folded")
        reason = self._check(partial)
        if reason:
            self.rejected[reason.split(":")[0]] += partial.count
            return Verdict(False, reason)
        v = partial.base_version
        acc = self._sums.setdefault(v, {k: np.zeros(a.shape) for k, a in self.parameters.items()})
        for k, s in partial.sums.items():
            acc[k] += s
        self._weights[v] = self._weights.get(v, 0.0) + partial.weight
        self._count += partial.count
        self.accepted += partial.count
        self.accepted_ids.update(partial.task_ids)
        if self._count < self.config.num_updates_for_model:
            return Verdict(True)
        self._aggregate()
        return Verdict(True, new_version=True)

    def _check(self, partial: PartialSum) -> str:
        """Return why ``partial`` is refused, or "" when it is acceptable."""
        v, current = partial.base_version, self.version
        if self.stopped:
            return self.stopped
        if self.done:
            return f"job done: version {current} reached max_model_version"
        if v < 0 or v > current:
            return f"unknown version: {v} (current {current})"
        if current - v > self.config.max_model_history:
            return f"stale: base version {v} is older than max_model_history allows ({current})"
        if set(partial.sums) != set(self.parameters) or any(
            partial.sums[k].shape != a.shape for k, a in self.parameters.items()
        ):
            return "shape mismatch: update arrays differ from the model's"
        if partial.weight <= 0 or partial.count == 0:
            return "empty: a partial sum needs weight > 0 and at least one task"
        if not self.accepted_ids.isdisjoint(partial.task_ids):
            return "duplicate task ids: already folded"
        return ""

    def _aggregate(self) -> None:
        """Fold the buffer into the global model and advance the version."""
        cfg, current = self.config, self.version
        total = sum(self._weights.values())
        for name, param in self.parameters.items():
            step = sum(
                staleness_weight(current, v, cfg.staleness_weight) * sums[name]
                for v, sums in self._sums.items()
            )
            self.parameters[name] = (param + cfg.global_lr * step / total).astype(np.float32)
        self.folded_last = self._count
        self._sums, self._weights, self._count = {}, {}, 0
        self.version += 1

    def state(self) -> tuple[dict[str, Any], Arrays]:
        """The state as JSON-ready figures and named arrays (``model/<name>`` float32,
        ``buffer/<version>/<name>`` float64); the folded ids are the caller's to keep."""
        arrays = {f"model/{k}": v for k, v in self.parameters.items()}
        for version, sums in self._sums.items():
            arrays.update({f"buffer/{version}/{k}": v for k, v in sums.items()})
        meta = {
            "version": self.version,
            "accepted": self.accepted,
            "rejected": dict(self.rejected),
            "weights": {str(v): w for v, w in self._weights.items()},
            "count": self._count,
            "stopped": self.stopped,
        }
        return meta, arrays

    def restore(self, meta: dict[str, Any], arrays: Arrays, accepted_ids: set[str]) -> None:
        """Take back a :meth:`state` and the folded ids."""
        self.parameters = {
            k.removeprefix("model/"): np.array(v, np.float32)
            for k, v in arrays.items()
            if k.startswith("model/")
        }
        self._sums = {}
        for key, value in arrays.items():
            if key.startswith("buffer/"):
                _, version, name = key.split("/", 2)
                self._sums.setdefault(int(version), {})[name] = np.array(value, np.float64)
        self.version = int(meta["version"])
        self.accepted = int(meta["accepted"])
        self.rejected = Counter(meta["rejected"])
        self._weights = {int(v): float(w) for v, w in meta["weights"].items()}
        self._count = int(meta["count"])
        self.stopped = str(meta.get("stopped", ""))
        self.accepted_ids = set(accepted_ids)
