"""The ``ray`` runtime: one actor per placement-group bundle, each hosting many nodes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from redfl.runtime.backend import Backend, Plan
from redfl.runtime.connect import ensure_ray
from redfl.runtime.host import Close, Connect
from redfl.runtime.protocol import Outcome, Pending, R, Request
from redfl.runtime.ray_host import HostActor
from redfl.runtime.resources import ResourceError

PLACEMENT_TIMEOUT_S = 60.0
RELEASE_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
NODE_QUERY_TIMEOUT_S = 30.0


class RayBackend(Backend):
    """Workers as Ray actors inside one placement group per federation.

    With ``current_group``, the federation reserves nothing: its workers go into bundles
    1, 2, ... of the placement group this driver runs in (a Ray Tune trial's, whose bundle
    0 holds the trial's driver), and that group is left to its owner on :meth:`stop`.
    """

    def __init__(self, address: str | None = None, current_group: bool = False) -> None:
        ensure_ray(address)
        self._actors: list[Any] = []
        self._group: Any = None  # the group this backend reserved (and removes)
        self._target: Any = None  # the group its workers are scheduled in
        self._current: Any = None
        if current_group:
            self._current = ray.util.get_current_placement_group()
            if self._current is None:
                raise ResourceError(
                    "resources.placement_group = 'current' needs a driver that runs inside a "
                    "placement group (a Ray Tune trial, say); this one runs in none"
                )

    def _current_bundles(self) -> list[dict[str, float]]:
        """The current group's bundles for workers (all but bundle 0, the driver's)."""
        return [dict(b) for b in self._current.bundle_specs[1:]]

    def available_resources(self) -> Mapping[str, float]:
        """``ray.available_resources()``, or the current group's worker bundles summed."""
        if self._current is not None:
            total: dict[str, float] = {}
            for bundle in self._current_bundles():
                for key, value in bundle.items():
                    total[key] = total.get(key, 0.0) + float(value)
            return total
        return dict(ray.available_resources())  # type: ignore[no-untyped-call]

    def machine_resources(self) -> list[Mapping[str, float]]:
        """The total resources of each alive Ray node (or each worker bundle of the
        current group)."""
        if self._current is not None:
            return list(self._current_bundles())
        nodes = ray.nodes()  # type: ignore[no-untyped-call]
        return [dict(n["Resources"]) for n in nodes if n.get("Alive")]

    def worker_nodes(self) -> list[str]:
        """The id of the Ray node each worker runs on, in worker order."""
        calls = [actor.node_id.remote() for actor in self._actors]
        return [str(n) for n in ray.get(calls, timeout=NODE_QUERY_TIMEOUT_S)]

    def start(self, plan: Plan) -> None:
        """Reserve the placement group, then start and connect the actors."""
        reserved = [i for i, spec in enumerate(plan.workers) if spec.bundle]
        offset = 0
        if reserved and self._current is not None:
            offset, self._target = 1, self._current
            if len(reserved) > len(self._current_bundles()):
                raise ResourceError(
                    f"the current placement group has {len(self._current_bundles())} worker "
                    f"bundle(s); the federation asked for {len(reserved)}"
                )
        elif reserved:
            bundles = [plan.workers[i].bundle for i in reserved]
            self._group = placement_group(
                bundles, strategy=plan.placement_strategy, name=f"{plan.federation_id}/group"
            )
            ready, _ = ray.wait([self._group.ready()], timeout=PLACEMENT_TIMEOUT_S)
            if not ready:
                self.stop()
                raise ResourceError(
                    f"placement group of {bundles} ({plan.placement_strategy}) not ready "
                    f"after {PLACEMENT_TIMEOUT_S:g} s; available: {self.available_resources()}"
                )
            self._target = self._group
        actor_class = ray.remote(HostActor)
        slot = {worker: offset + bundle for bundle, worker in enumerate(reserved)}
        for i, spec in enumerate(plan.workers):
            options = {
                "name": spec.name,
                "max_concurrency": spec.options.get("max_concurrency", 8),
                "max_restarts": plan.max_restarts,
                "max_task_retries": 0,
                "num_cpus": spec.bundle.get("CPU", 0),
                "num_gpus": spec.bundle.get("GPU", 0),
                "resources": {
                    k: v for k, v in spec.bundle.items() if k not in ("CPU", "GPU", "memory")
                },
            }
            if i in slot:
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    self._target, placement_group_bundle_index=slot[i]
                )
            self._actors.append(actor_class.options(**options).remote(*plan.host_arguments(i)))
        outcomes = self.call_all(Connect(tuple(self._actors)))
        errors = [o.error for o in outcomes if o.error is not None]
        if errors:
            self.stop()
            raise RuntimeError(f"workers failed to start: {errors[0]}") from errors[0]

    @property
    def num_workers(self) -> int:
        """How many actors this federation started."""
        return len(self._actors)

    def put(self, value: Any) -> Any:
        """``ray.put``: serialise once, pass the reference to many calls."""
        return ray.put(value)

    def call(self, worker: int, request: Request[R]) -> Pending[R]:
        """``actor.handle.remote(request)``; object references in its fields (from
        :meth:`put`) travel as arguments, so that Ray hands the worker their values."""
        names, refs = [], []
        for item in fields(request):
            value = getattr(request, item.name)
            if isinstance(value, ray.ObjectRef):
                names.append(item.name)
                refs.append(value)
        if names:
            request = replace(request, **dict.fromkeys(names))
        return Pending(self._actors[worker].handle.remote(request, names, *refs))

    def finished(
        self, pending: Sequence[Pending[R]], timeout: float | None
    ) -> list[tuple[int, Outcome[R]]]:
        """``ray.wait`` for one of ``pending``, at most ``timeout`` seconds (blocks; no
        polling); the first finished call only."""
        refs = [p.handle for p in pending]
        done, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        return [(refs.index(done[0]), _outcome(done[0]))] if done else []

    def kill(self, worker: int) -> None:
        """``ray.kill`` the worker's actor; Ray re-creates it in its bundle (``max_restarts``)."""
        ray.kill(self._actors[worker], no_restart=False)

    def reconnect(self, worker: int) -> Pending[int]:
        """Send a re-created actor the handles of every actor (:class:`Connect`)."""
        return self.call(worker, Connect(tuple(self._actors)))

    def lost(self, error: BaseException) -> str | None:
        """The reason a call failed with its actor (a worker death, its node lost), or
        ``None``."""
        if isinstance(error, ray.exceptions.RayActorError | ray.exceptions.NodeDiedError):
            return describe_loss(error)
        return None

    def stop(self) -> None:
        """Kill the actors and remove the placement group (never the current group)."""
        if self._actors:
            with contextlib.suppress(Exception):
                ray.get([a.handle.remote(Close()) for a in self._actors], timeout=CLOSE_TIMEOUT_S)
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self._actors = []
        self._target = None
        if self._group is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(self._group)
                _wait_removed(self._group.id.hex(), RELEASE_TIMEOUT_S)
            self._group = None


def _wait_removed(group_id: str, seconds: float) -> None:
    """Wait until Ray reports the placement group removed (its resources are free)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        entry = ray.util.placement_group_table().get(group_id, {})
        if entry.get("state", "REMOVED") == "REMOVED":
            return
        time.sleep(0.02)


def describe_loss(error: BaseException) -> str:
    """One line on how a worker was lost, from Ray's error."""
    text = " ".join(str(error).split()).lower()
    if isinstance(error, ray.exceptions.NodeDiedError) or "node died" in text:
        return "its node was lost"
    if "ray.kill" in text:
        return "its process was ended by ray.kill"
    return f"its process died: killed, out of memory or crashed ({type(error).__name__})"


def _outcome(ref: Any) -> Outcome[Any]:
    try:
        return Outcome(ray.get(ref))
    except ray.exceptions.RayTaskError as error:
        cause = error.cause if isinstance(error.cause, BaseException) else error
        return Outcome(None, cause)
    except ray.exceptions.RayError as error:
        return Outcome(None, error)
