"""A federation across sites from a real ``redfl serve``: an admin adds two sites through the
API, each site process runs with the bundle it was handed, a researcher's run with
``runtime = "sites"`` executes as a Ray job on the platform's federation home, and the run's
sites endpoint shows both sites' rounds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from platform_app import SITES_RUN
from platform_server import Server, make_server
from sites_rig import SiteProcess
from waiting import free_port, wait_until

from redfl.trust import Bundle

NAMES = ("alpha", "beta")
CONFIG = SITES_RUN + "join_timeout = 120\n"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    settings = {
        "ray_num_cpus": 2,
        "sites_listen": f"127.0.0.1:{port}",
        "sites_server_url": f"https://127.0.0.1:{port}",
    }
    yield from make_server(tmp_path, settings)


def test_a_sites_run_from_the_platform_with_real_site_processes(
    server: Server, tmp_path: Path
) -> None:
    server.start()
    sites = []
    try:
        for name in NAMES:
            added = server.post("/api/sites", "ada", {"name": name})
            assert added.status_code == 201, added.text
            data = added.json()["bundle"]
            folder = tmp_path / name
            folder.mkdir()
            bundle = Bundle(data["key"], data["cert"], data["ca"], data["fields"])
            bundle.write(folder / "credentials.json")
            sites.append(
                SiteProcess(folder / "credentials.json", "redfl.examples.echo:EchoClient", folder)
            )
        made = server.post("/api/runs", "rita", {"config": CONFIG})
        assert made.status_code == 201, made.text
        run_id = made.json()["id"]

        def ended() -> bool:
            return server.get(f"/api/runs/{run_id}", "vic")["status"] not in ("queued", "running")

        assert wait_until(ended, 240.0), [s.output()[-500:] for s in sites]
        shown = server.get(f"/api/runs/{run_id}", "vic")
        assert shown["status"] == "succeeded", (shown["error"], [s.output()[-500:] for s in sites])
        states = server.get(f"/api/runs/{run_id}/sites", "vic")
        assert [(s["name"], s["rounds"], s["failures"]) for s in states] == [
            ("alpha", 2, 0),
            ("beta", 2, 0),
        ]
        assert all(s["address"].startswith("127.0.0.1:") for s in states)
        assert shown["rounds_done"] == 2
    finally:
        for site in sites:
            site.stop()
