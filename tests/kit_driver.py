"""Run a kit's ``hierarchy.toml`` on the cluster its start scripts made, and report where
every worker ran (a subprocess of the deployment-kit test, in the kit's environment).

``python tests/kit_driver.py FOLDER ADDRESS`` prints one JSON line: the run's rounds and
coverage, the layout (unit -> worker), each worker's Ray node, and each node's custom
resources.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(folder: Path, address: str) -> None:
    import ray

    from redfl import HierarchicalFederation
    from redfl.run.config import load_config
    from redfl.run.prepare import prepare

    config = load_config(folder / "hierarchy.toml")
    data = config.model_dump(by_alias=True, exclude_none=True)
    data["federation"].update(address=address, rounds=1)
    prepared = prepare(data)
    prepared.connect()
    federation = prepared.federation
    assert isinstance(federation, HierarchicalFederation)
    try:
        result = federation.train(1)
        nodes = federation.worker_nodes()
        layout = dict(federation.layout.worker)
        pinned = list(federation.layout.pinned)
    finally:
        federation.stop()
    resources = {
        node["NodeID"]: sorted(k for k in node["Resources"] if k.startswith("redfl-site-"))
        for node in ray.nodes()  # type: ignore[no-untyped-call]
        if node["Alive"]
    }
    record = result.history[-1]
    print(
        json.dumps(
            {
                "rounds": len(result.history),
                "coverage": record.metrics["coverage"],
                "layout": layout,
                "pinned": pinned,
                "nodes": nodes,
                "resources": resources,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
