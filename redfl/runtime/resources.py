"""Resources: the ``[resources]`` table, resource splits and capacity checks.

:class:`ResourcesConfig` says how workers are sized and placed; the splits and checks are
pure functions over plain dicts, so they are tested without Ray; the ray runtime feeds them
``ray.available_resources()`` and ``ray.nodes()``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import Field, field_validator, model_validator

from redfl.core.config import Strict

Bundle = dict[str, float]
ResourceMap = dict[str, float]


def _check_resources(value: ResourceMap, field: str) -> ResourceMap:
    for key, amount in value.items():
        if not 0 <= amount < math.inf:
            raise ValueError(f"{field}[{key!r}] must be a finite number >= 0, got {amount}")
    return value


class ResourcesConfig(Strict):
    """How workers are sized and placed (the ``[resources]`` table)."""

    split: Literal["uniform", "explicit", "adaptive"] = "uniform"
    num_workers: int | None = Field(default=None, ge=1, le=10_000)
    worker: ResourceMap = Field(default_factory=lambda: {"CPU": 1.0})
    bundles: list[ResourceMap] = Field(default_factory=list, max_length=10_000)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    client_state_mb: float = Field(default=256.0, ge=0.0, le=1e7)
    """Memory bound per worker for stateful clients' state; the rest is spilled to disk."""
    placement_group: Literal["own", "current"] = "own"
    """``own``: reserve a placement group for the federation; ``current``: place workers in
    bundles 1, 2, ... of the group the driver runs in (a Ray Tune trial; bundle 0 is its)."""

    @field_validator("worker")
    @classmethod
    def _worker(cls, value: ResourceMap) -> ResourceMap:
        return _check_resources(value, "worker")

    @field_validator("bundles")
    @classmethod
    def _bundles(cls, value: list[ResourceMap]) -> list[ResourceMap]:
        for bundle in value:
            _check_resources(bundle, "bundles")
        return value

    @model_validator(mode="after")
    def _explicit_needs_bundles(self) -> ResourcesConfig:
        if self.split == "explicit" and not self.bundles:
            raise ValueError("split 'explicit' needs a non-empty 'bundles' list")
        if self.split != "explicit" and self.bundles:
            raise ValueError("'bundles' is only used with split = 'explicit'")
        return self


class ResourceError(RuntimeError):
    """The cluster cannot meet the resources a federation asked for; ``field`` names the
    ``[resources]`` key to change, when known."""

    def __init__(self, message: str, field: str = "resources") -> None:
        super().__init__(message)
        self.field = field


def _clean(bundle: Mapping[str, float]) -> Bundle:
    return {k: float(v) for k, v in bundle.items() if v}


def worker_bundles(
    spec: ResourcesConfig, available: Mapping[str, float], num_hosted: int
) -> list[Bundle]:
    """The bundle of each worker, by the split ``spec.split`` asks for.

    - ``uniform``: ``spec.num_workers`` copies of ``spec.worker`` (default: as many as the
      available amount of every resource it asks for allows, custom resources included, so
      ``worker = {CPU = 1, site_a = 1}`` gives as many workers as ``site_a`` units);
    - ``explicit``: ``spec.bundles``, one worker each;
    - ``adaptive``: the available CPUs and GPUs divided evenly over ``spec.num_workers``
      workers (default: one per available CPU).

    Never more workers than hosted nodes, and at least one.
    """
    cpus = float(available.get("CPU", 0.0))
    if spec.split == "explicit":
        return [_clean(b) for b in spec.bundles[: max(1, num_hosted)]]
    if spec.split == "uniform":
        worker = _clean(spec.worker)
        fits = [int(float(available[k]) // v) for k, v in worker.items() if k in available]
        count = spec.num_workers or max(1, min(fits) if fits else int(cpus))
        return [worker] * max(1, min(count, num_hosted))
    count = max(1, min(spec.num_workers or int(cpus), num_hosted))
    share = {
        key: math.floor(float(available.get(key, 0.0)) / count * 100) / 100
        for key in ("CPU", "GPU")
    }
    return [_clean(share)] * count


def check_capacity(
    bundles: Sequence[Mapping[str, float]],
    strategy: str,
    available: Mapping[str, float],
    node_resources: Sequence[Mapping[str, float]],
) -> None:
    """Raise :class:`ResourceError` if ``bundles`` cannot be placed with ``strategy``.

    ``available`` is the cluster's free total; ``node_resources`` the resources of
    each cluster machine (for STRICT_PACK and STRICT_SPREAD).
    """
    asked: dict[str, float] = {}
    for bundle in bundles:
        for key, value in bundle.items():
            asked[key] = asked.get(key, 0.0) + value
    short = {k: v for k, v in asked.items() if v > float(available.get(k, 0.0)) + 1e-9}
    if short:
        raise ResourceError(
            f"the cluster cannot meet the resources asked for: asked {_fmt(asked)} in "
            f"{len(bundles)} bundle(s), available {_fmt(available, keys=asked)}"
        )
    for bundle in bundles:
        if not any(_fits(bundle, node) for node in node_resources):
            raise ResourceError(
                f"no machine of the cluster can hold the bundle {_fmt(bundle)} "
                f"(machines: {[_fmt(n, keys=bundle) for n in node_resources]})"
            )
    if strategy == "STRICT_PACK" and not any(
        all(value <= float(node.get(k, 0.0)) + 1e-9 for k, value in asked.items())
        for node in node_resources
    ):
        raise ResourceError(
            f"STRICT_PACK needs {_fmt(asked)} on one machine; no machine has it free "
            f"(machines: {[_fmt(n, keys=asked) for n in node_resources]})"
        )
    if strategy == "STRICT_SPREAD" and not _spread(bundles, node_resources):
        able = sum(any(_fits(b, node) for b in bundles) for node in node_resources)
        keys = {k: 0.0 for b in bundles for k in b}
        raise ResourceError(
            f"STRICT_SPREAD needs one machine per bundle: asked {len(bundles)} bundles "
            f"{[_fmt(b) for b in bundles]}, but only {able} of the cluster's "
            f"{len(node_resources)} machine(s) can hold one "
            f"{[_fmt(n, keys=keys) for n in node_resources]}"
        )


def check_cluster_fit(
    spec: ResourcesConfig, num_nodes: int, machines: Sequence[Mapping[str, float]]
) -> None:
    """Raise :class:`ResourceError` if the workers ``spec`` asks for (for ``num_nodes``
    nodes) could not be placed on ``machines`` even with nothing else running: each
    machine's total resources, as a cluster reports them. The error's ``field`` is the key
    to change: ``resources.worker`` (``resources.bundles`` for explicit bundles), or
    ``resources.num_workers`` when one worker would fit.

    A config that passes may still wait or fail at start when other runs hold resources;
    one that fails here never could run on this cluster.

    Examples
    --------
    >>> check_cluster_fit(ResourcesConfig(worker={"GPU": 1}), 10, [{"CPU": 2.0}])
    Traceback (most recent call last):
    ...
    redfl.runtime.resources.ResourceError: the cluster cannot meet the resources asked for: \
asked {GPU: 2} in 2 bundle(s), available {GPU: 0}
    """
    totals: dict[str, float] = {}
    for machine in machines:
        for key, value in machine.items():
            totals[key] = totals.get(key, 0.0) + float(value)
    try:
        check_capacity(
            worker_bundles(spec, totals, num_nodes), spec.placement_strategy, totals, machines
        )
    except ResourceError as error:
        error.field = "resources.bundles" if spec.split == "explicit" else "resources.worker"
        if spec.num_workers is not None:  # would fewer workers fit? then the count is wrong
            fewer = worker_bundles(spec.model_copy(update={"num_workers": 1}), totals, num_nodes)
            try:
                check_capacity(fewer, spec.placement_strategy, totals, machines)
                error.field = "resources.num_workers"
            except ResourceError:
                pass
        raise


def _fits(bundle: Mapping[str, float], node: Mapping[str, float]) -> bool:
    return all(value <= float(node.get(k, 0.0)) + 1e-9 for k, value in bundle.items())


def _spread(bundles: Sequence[Mapping[str, float]], nodes: Sequence[Mapping[str, float]]) -> bool:
    """Whether each bundle can get a machine of its own (bipartite matching)."""
    owner: dict[int, int] = {}

    def place(b: int, seen: set[int]) -> bool:
        for m, node in enumerate(nodes):
            if m in seen or not _fits(bundles[b], node):
                continue
            seen.add(m)
            if m not in owner or place(owner[m], seen):
                owner[m] = b
                return True
        return False

    return all(place(b, set()) for b in range(len(bundles)))


def _fmt(resources: Mapping[str, float], keys: Mapping[str, float] | None = None) -> str:
    names = sorted(keys) if keys is not None else sorted(resources)
    return "{" + ", ".join(f"{k}: {float(resources.get(k, 0.0)):g}" for k in names) + "}"
