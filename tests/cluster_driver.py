"""A real multi-node Ray cluster on this machine, and scenarios run against it.

A process joins one Ray cluster only, and the pytest session already runs its own Ray
instance, so the cluster and the federations that use it live in subprocesses:

``python tests/cluster_driver.py serve``
    Starts a ``ray.cluster_utils.Cluster``: a head with no CPU and one 1-CPU node per site
    (``site_a``, ``site_b``, ``site_c``; each node carries one unit of its site's custom
    resource), with health checks lowered so a lost node is declared dead in seconds.
    Prints one JSON line ``{"address", "nodes": {site: node id}, "pids": [...]}``, then
    reads commands on stdin, one a line, answering each with one JSON line:
    ``remove SITE`` (kill that node's processes, no grace, and wait until the cluster
    declares it dead), ``add SITE`` (start a fresh node for that site), ``stop`` (or end of
    input: shut the cluster down and exit).

``python tests/cluster_driver.py scenario ADDRESS NAME [NAME ...]``
    Joins the cluster at ADDRESS, runs each named scenario (see :data:`SCENARIOS`) and
    prints one JSON line ``{"results": {name: result}}``. A scenario is a function of the
    address that returns a JSON-ready dict; a new one is one more function here. A
    scenario may print ``{"progress": ...}`` lines first (:func:`progress`, e.g. from a
    callback after round 2), on which the test can act (``remove site_b`` to the serve
    process: a node lost mid-run, once workers restart).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SITES = ("site_a", "site_b", "site_c")
HEALTH = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
}
"""The head's ``_system_config``: a node that stops answering is dead after ~1.5 s.

The nodes keep Ray's default address (this machine's own IP): a cluster bound to
127.0.0.1 cannot be joined by address, since ``ray.init`` rewrites a loopback address to
the machine's IP before connecting."""
OBJECT_STORE_BYTES = 100 * 2**20
DEAD_WITHIN_S = 20.0


# -- the cluster ----------------------------------------------------------------------------


def _pids(node: Any) -> list[int]:
    return [
        info.process.pid
        for infos in node.all_processes.values()
        for info in infos
        if info.process is not None
    ]


TREE_SITE = {"site_b": "redfl-site-agg-2"}
"""Extra custom resources per site: site_b's machine is where a hierarchy's agg-2 lives."""


def _add_site(cluster: Any, site: str) -> Any:
    extra = {TREE_SITE[site]: 1} if site in TREE_SITE else {}
    return cluster.add_node(
        num_cpus=1,
        resources={site: 1, **extra},
        object_store_memory=OBJECT_STORE_BYTES,
    )


def _wait_dead(cluster: Any, node_id: str) -> float:
    """Seconds until the cluster's node table says ``node_id`` is dead."""
    started = time.monotonic()
    while time.monotonic() - started < DEAD_WITHIN_S:
        table = {n["NodeID"]: n for n in cluster.global_state.node_table()}
        if not table.get(node_id, {}).get("Alive", False):
            break
        time.sleep(0.1)
    return round(time.monotonic() - started, 2)


def serve() -> None:
    """Start the cluster, print its address, obey stdin commands, shut it down."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "object_store_memory": OBJECT_STORE_BYTES,
            "_system_config": HEALTH,
        },
    )
    try:
        nodes = {site: _add_site(cluster, site) for site in SITES}
        cluster.wait_for_nodes()
        pids = _pids(cluster.head_node) + [p for n in nodes.values() for p in _pids(n)]
        _say(
            {
                "address": cluster.address,
                "nodes": {site: node.node_id for site, node in nodes.items()},
                "pids": pids,
            }
        )
        for line in sys.stdin:
            verb, _, site = line.strip().partition(" ")
            if verb == "stop":
                break
            if verb == "remove" and site in nodes:
                node = nodes.pop(site)
                cluster.remove_node(node, allow_graceful=False)
                _say({"removed": site, "dead_after_s": _wait_dead(cluster, node.node_id)})
            elif verb == "add" and site in SITES and site not in nodes:
                nodes[site] = _add_site(cluster, site)
                _say({"added": site, "node": nodes[site].node_id, "pids": _pids(nodes[site])})
            else:
                _say({"error": f"unknown command {line.strip()!r}"})
    finally:
        cluster.shutdown()  # type: ignore[no-untyped-call]


# -- scenarios ------------------------------------------------------------------------------


def _config(address: str, resources: dict[str, Any], clients: int = 6) -> dict[str, Any]:
    return {
        "federation": {"rounds": 1, "runtime": "ray", "address": address},
        "client": {
            "target": "redfl.examples.echo:EchoClient",
            "num_clients": clients,
            "options": {"size": 8},
        },
        "resources": resources,
    }


def _wait_all_free(seconds: float = 30.0) -> None:
    """Wait until every CPU of the cluster shows free again (a group just removed takes a
    moment to be seen as released, and placement reads that view)."""
    import ray

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        total = ray.cluster_resources().get("CPU", 0.0)  # type: ignore[no-untyped-call]
        if ray.available_resources().get("CPU", 0.0) >= total:  # type: ignore[no-untyped-call]
            return
        time.sleep(0.1)


def _worker_nodes(address: str, resources: dict[str, Any]) -> list[str]:
    """Start a one-round echo federation with ``resources``; its workers' node ids."""
    from redfl.run.prepare import prepare

    prepared = prepare(_config(address, resources))
    prepared.connect()
    _wait_all_free()
    federation = prepared.federation
    try:
        federation.train(1)
        return federation.worker_nodes()
    finally:
        federation.stop()


def spread(address: str) -> dict[str, Any]:
    """Three half-CPU workers, SPREAD and PACK: the nodes each strategy put them on."""
    half = {"worker": {"CPU": 0.5}, "num_workers": 3}
    packed = _worker_nodes(address, {**half, "placement_strategy": "PACK"})
    spread = _worker_nodes(address, {**half, "placement_strategy": "SPREAD"})
    return {"PACK": packed, "SPREAD": spread}


def strict_spread(address: str) -> dict[str, Any]:
    """Four STRICT_SPREAD bundles on three usable nodes: the error, and what it left."""
    import ray

    from redfl.run.prepare import prepare
    from redfl.runtime.resources import ResourceError

    resources = {"worker": {"CPU": 0.25}, "num_workers": 4, "placement_strategy": "STRICT_SPREAD"}
    groups_before = len(ray.util.placement_group_table())
    federation = prepare(_config(address, resources)).federation
    error = None
    try:
        federation.train(1)
    except ResourceError as refused:
        error = str(refused)
    finally:
        federation.stop()
    actors = ray.util.list_named_actors(all_namespaces=True)
    named = [a for a in actors if federation.federation_id in str(a)]
    return {
        "error": error,
        "groups_created": len(ray.util.placement_group_table()) - groups_before,
        "actors_named": len(named),
    }


def pin(address: str) -> dict[str, Any]:
    """Workers that ask for ``site_a`` (half or all of it): the nodes they landed on."""
    return {
        "halves": _worker_nodes(address, {"worker": {"CPU": 0.5, "site_a": 0.5}}),
        "whole": _worker_nodes(address, {"worker": {"CPU": 1, "site_a": 1}}),
    }


def tree_pin(address: str) -> dict[str, Any]:
    """A hierarchy with agg-2's subtree pinned to the machine offering its site resource:
    where each worker ran, the root's bytes, and whether the bits equal the local run's."""
    from redfl import HierarchicalFederation
    from redfl.run.prepare import prepare

    config = _config(address, {"worker": {"CPU": 0.5}, "num_workers": 2}, clients=16)
    config["topology"] = {
        "schema": "hierarchical",
        "depth": 2,
        "width": 2,
        "lcps": 2,
        "pin": ["agg-2"],
    }
    config["federation"]["rounds"] = 2
    config["strategy"] = {"name": "fedavg", "fraction_evaluate": 0.0}
    prepared = prepare(config)
    prepared.connect()
    _wait_all_free()
    federation = prepared.federation
    assert isinstance(federation, HierarchicalFederation)
    try:
        result = federation.train(2)
        nodes = federation.worker_nodes()
        layout = dict(federation.layout.worker)
    finally:
        federation.stop()
    config["federation"].update(runtime="local", address=None)
    oracle = prepare(config).federation.train(2)
    record = result.history[-1]
    return {
        "nodes": nodes,
        "layout": layout,
        "root_bytes": record.metrics["root_bytes"],
        "succeeded": record.succeeded,
        "identical": result.parameters_equal(oracle),
    }


GO_FILE = Path(tempfile.gettempdir()) / "redfl-cluster-node-loss-go"
"""The node-loss scenario waits for this file: the test writes it once the node is gone."""


def node_loss(address: str) -> dict[str, Any]:
    """Two SPREAD workers, 6 digits rounds: once undisturbed, once with worker 1's node
    removed after round 2 (the test removes it, then writes :data:`GO_FILE`)."""
    from redfl.core.events import Event, RoundFinished
    from redfl.run.prepare import prepare
    from redfl.schemas.callbacks import Callback

    config = _config(address, {"worker": {"CPU": 1}, "num_workers": 2}, clients=8)
    config["resources"]["placement_strategy"] = "SPREAD"
    config["client"] = {
        "target": "redfl.examples.digits:DigitsClient",
        "num_clients": 8,
        "options": {"partition": "iid", "lr": 0.3, "epochs": 1, "batch_size": 16},
    }
    config["federation"].update(rounds=6, max_worker_restarts=2)

    class LoseANode(Callback):
        def __init__(self, federation: Any) -> None:
            self.federation = federation

        def on_event(self, event: Event) -> bool | None:
            if isinstance(event, RoundFinished) and event.record.round == 2:
                progress({"node": self.federation.worker_nodes()[1]})
                deadline = time.monotonic() + 60
                while not GO_FILE.exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
            return None

    finals = []
    for disturbed in (False, True):
        prepared = prepare(config)
        prepared.connect()
        _wait_all_free()
        federation = prepared.federation
        federation.callbacks = [LoseANode(federation)] if disturbed else []
        try:
            result = federation.train(6)
            health = federation.health()
        finally:
            federation.stop()
        finals.append(result)
    straight, lost = finals
    assert straight.parameters is not None and lost.parameters is not None
    return {
        "identical": lost.parameters_equal(straight),
        "rounds": len(lost.history),
        "failures": len(lost.failures),
        "restarts": sum(w.restarts for w in health),
    }


SCENARIOS: dict[str, Callable[[str], dict[str, Any]]] = {
    "node_loss": node_loss,
    "spread": spread,
    "strict_spread": strict_spread,
    "pin": pin,
    "tree_pin": tree_pin,
}


def scenario(address: str, names: list[str]) -> None:
    """Run the named scenarios against the cluster at ``address``; print their results."""
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; known: {sorted(SCENARIOS)}")
    results = {name: SCENARIOS[name](address) for name in names}
    _say({"results": results})


def progress(body: dict[str, Any]) -> None:
    """Tell the test how far a scenario got (one ``{"progress": body}`` line)."""
    _say({"progress": body})


def _say(body: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(body) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve()
    elif sys.argv[1:2] == ["scenario"] and len(sys.argv) >= 4:
        scenario(sys.argv[2], sys.argv[3:])
    else:
        raise SystemExit(__doc__)
