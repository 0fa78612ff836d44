"""The platform operates an edge deployment: a real edge server, LCPs and routing proxy over
TLS on 127.0.0.1 (:class:`edge_rig.ThreadedDeployment`) and the platform's app on a real
HTTP server, reaching the edge server with the tree's operator bundle. Jobs are submitted,
followed version by version, listed and aborted through the platform, which records who did
what; its routes refuse missing, expired, forged and revoked user tokens; a revoked, foreign,
wrong-kind or missing operator credential, and an edge server that is down or never answers,
are clear errors within the timeout; the dashboard shows a job's version while it runs.

With ``REDFL_SCREENSHOTS=<folder>`` the edge jobs page is saved there as ``edge-jobs.png``
(the README's picture)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import (  # noqa: F401  (fixtures)
    PageErrors,
    browser_fixture,
    log_in,
    page_fixture,
    serve_in_thread,
)
from edge_devices import StepDevice
from edge_rig import SECRET, ThreadedDeployment, provision
from fastapi import FastAPI
from platform_app import PASSWORD, add_user, bad_tokens, bearer, make_app
from playwright.sync_api import Page
from typer.testing import CliRunner
from waiting import free_port, wait_until

from redfl.cli import app as cli_app
from redfl.edge.jobs import JobSpec
from redfl.edge.simulator import SimulatorConfig, Summary, run_simulation
from redfl.platform.settings import Settings, SettingsError
from redfl.trust import TrustHome
from redfl.trust.layout import bundle_path

LCPS = ["lcp-1-1", "lcp-2-1"]
STEP = "edge_devices:StepDevice"


def step_job(name: str, **fields: Any) -> dict[str, Any]:
    """A job of :class:`edge_devices.StepDevice` (each version adds 0.25 to ``w``), as JSON."""
    return {
        "name": name,
        "client": STEP,
        "options": {"size": 4, "step": 0.25},
        "evaluate": "edge_devices:mean_of_w",
        "num_updates_for_model": 2,
        "max_model_version": 4,
        "max_model_history": 4,
        "device_selection_size": 4,
        "staleness_weight": False,
        **fields,
    }


@dataclass
class Rig:
    """The edge deployment, the platform's app and its base URL."""

    edge: ThreadedDeployment
    app: FastAPI
    base: str

    def call(self, method: str, path: str, who: str | None, body: Any = None) -> httpx.Response:
        """A request to the platform as user ``who`` (no token: ``None``)."""
        headers = bearer(self.app, who) if who else {}
        return httpx.request(method, self.base + path, json=body, headers=headers, timeout=30.0)

    def submit(self, job: dict[str, Any], who: str = "rita") -> dict[str, Any]:
        reply = self.call("POST", "/api/edge/jobs", who, {"job": job})
        assert reply.status_code == 201, reply.text
        data: dict[str, Any] = reply.json()
        return data

    def simulate(self, job: str, devices: int = 8, delay: float = 0.0) -> Summary:
        config = SimulatorConfig(
            self.edge.url["proxy"], job, StepDevice, devices, 8, SECRET, timeout=60, delay=delay
        )
        return run_simulation(config)


def edge_settings(folder: Path, url: str, credential: str = "operator") -> dict[str, Any]:
    """Platform settings naming one edge deployment, ``main``."""
    return {
        "allowed_packages": ("edge_devices",),
        "edge_deployments": {
            "main": {"url": url, "credential": str(bundle_path(folder, credential))}
        },
        "edge_timeout_seconds": 5.0,
    }


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    folder = provision(tmp_path_factory.mktemp("tree"))
    edge = ThreadedDeployment(JobSpec.model_validate(step_job("cli-job")), LCPS, folder)
    data = tmp_path_factory.mktemp("platform") / "data"
    app = make_app(data, **edge_settings(folder, edge.url["server"]))
    for name, role in (("ada", "admin"), ("rita", "researcher"), ("ron", "researcher")):
        add_user(app, name, role)
    add_user(app, "vic", "viewer")
    with serve_in_thread(app) as base:
        yield Rig(edge, app, base)
    edge.close()


def test_a_job_submitted_through_the_platform_advances_and_is_listed(rig: Rig) -> None:
    made = rig.submit(step_job("plat-a"))
    job_id = made["job_id"]
    assert (made["status"], made["version"], made["submitted_by"]) == ("running", 0, "rita")
    seen: list[int] = []
    summaries: list[Summary] = []
    worker = threading.Thread(
        target=lambda: summaries.append(rig.simulate("plat-a", delay=0.2)), daemon=True
    )
    worker.start()

    def finished() -> bool:
        reply = rig.call("GET", f"/api/edge/jobs/{job_id}", "vic")
        assert reply.status_code == 200, reply.text
        seen.append(reply.json()["version"])
        return bool(reply.json()["status"] != "running")

    assert wait_until(finished, 90.0), seen
    worker.join(60)
    assert len(summaries) == 1 and len(summaries[0].acked) >= 8  # two updates per version
    # followed while it ran: from version 0, through at least one between, to the last
    assert seen == sorted(seen) and seen[0] == 0 and seen[-1] == 4, seen
    assert {1, 2, 3} & set(seen), seen
    job = rig.call("GET", f"/api/edge/jobs/{job_id}", "vic").json()
    assert job["status"] == "succeeded"
    assert [h["version"] for h in job["history"]] == [0, 1, 2, 3, 4]
    # each version adds 0.25 to every weight: the server's evaluation saw exactly that
    assert [h["mean"] for h in job["history"]] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert [(a["action"], a["user"], a["detail"]) for a in job["actions"]] == [
        ("submit", "rita", "plat-a")
    ]
    listing = rig.call("GET", "/api/edge/jobs", "vic").json()
    assert listing["deployment"] == "main"
    by_id = {j["job_id"]: j for j in listing["jobs"]}
    assert by_id[job_id]["submitted_by"] == "rita" and by_id[job_id]["version"] == 4
    cli_job = next(j for j in listing["jobs"] if j["name"] == "cli-job")
    assert cli_job["submitted_by"] is None  # submitted by the edge's own operator, not here


def test_only_the_submitter_or_an_admin_aborts_and_the_abort_is_recorded(rig: Rig) -> None:
    job_id = rig.submit(step_job("plat-b"))["job_id"]
    path = f"/api/edge/jobs/{job_id}/abort"
    viewer = rig.call("POST", path, "vic")
    assert viewer.status_code == 403 and "needs role 'researcher'" in viewer.json()["detail"]
    other = rig.call("POST", path, "ron", {"reason": "mine now"})
    assert other.status_code == 403
    assert other.json()["detail"] == (
        f"only the user who submitted job {job_id!r} or an admin may abort it"
    )
    assert rig.edge.server.jobs[job_id].running  # refused before the edge server was asked
    ended = rig.call("POST", path, "rita", {"reason": "wrong options"})
    assert ended.status_code == 200, ended.text
    assert (ended.json()["status"], ended.json()["aborted_by"]) == ("cancelled", "rita")
    assert not rig.edge.server.jobs[job_id].running
    job = rig.call("GET", f"/api/edge/jobs/{job_id}", "vic").json()
    assert [(a["action"], a["user"], a["detail"]) for a in job["actions"]] == [
        ("submit", "rita", "plat-b"),
        ("abort", "rita", "wrong options"),
    ]
    assert (job["status"], job["submitted_by"], job["aborted_by"]) == ("cancelled", "rita", "rita")
    # an admin may abort any job, the edge operator's own too
    cli_id = next(j["job_id"] for j in rig.edge.server.listing() if j["name"] == "cli-job")
    admin = rig.call("POST", f"/api/edge/jobs/{cli_id}/abort", "ada")
    assert admin.status_code == 200 and admin.json()["aborted_by"] == "ada"
    assert admin.json()["submitted_by"] is None


def test_every_edge_route_refuses_missing_expired_forged_and_revoked_tokens(rig: Rig) -> None:
    job_id = rig.edge.job.job_id
    routes = [
        ("GET", "/api/edge/deployments", None),
        ("GET", "/api/edge/jobs", None),
        ("GET", f"/api/edge/jobs/{job_id}", None),
        ("POST", "/api/edge/jobs", {"job": step_job("never")}),
        ("POST", f"/api/edge/jobs/{job_id}/abort", {"reason": "no"}),
    ]
    before = len(rig.edge.server.listing())
    for kind, headers in bad_tokens(rig.app, "ada").items():
        for method, path, body in routes:
            reply = httpx.request(method, rig.base + path, json=body, headers=headers, timeout=30.0)
            assert reply.status_code == 401, (kind, method, path, reply.text)
    assert len(rig.edge.server.listing()) == before  # nothing reached the edge server


def test_a_bad_job_is_refused_with_422_naming_the_field(rig: Rig) -> None:
    before = len(rig.edge.server.listing())
    cases = {
        # the platform's own rules: code from an allowed package, no server files
        "job.client": step_job("x", client="os:system"),
        "job.evaluate": step_job("x", evaluate="subprocess:run"),
        "job.initial_parameters": step_job("x", initial_parameters="/etc/passwd"),
        # the edge server's validation, passed on
        "job.num_updates_for_model": step_job("x", num_updates_for_model=0),
        "job.no_such_field": step_job("x", no_such_field=1),
    }
    for field, job in cases.items():
        reply = rig.call("POST", "/api/edge/jobs", "rita", {"job": job})
        assert reply.status_code == 422, (field, reply.text)
        assert reply.json()["field"] == field, reply.json()
        assert reply.json()["detail"].startswith(field), reply.json()
    deep: Any = 1
    for _ in range(80):
        deep = [deep]
    nested = rig.call("POST", "/api/edge/jobs", "rita", {"job": step_job("x", options=deep)})
    assert nested.status_code == 422
    assert nested.json() == {"detail": "job: nested more than 64 levels deep", "field": "job"}
    allowed = rig.call("POST", "/api/edge/jobs", "rita", {"job": step_job("x", client="os:x")})
    assert "allowed: redfl.examples, edge_devices" in allowed.json()["detail"]
    extra = rig.call("POST", "/api/edge/jobs", "rita", {"job": step_job("y"), "spec": 1})
    assert extra.status_code == 422 and extra.json()["field"] == "body.spec"
    big = rig.call("POST", "/api/edge/jobs", "rita", {"job": step_job("y", pad="x" * 1_100_000)})
    assert (big.status_code, big.json()["detail"]) == (
        413,
        "request body over the 1000000-byte limit",
    )
    viewer = rig.call("POST", "/api/edge/jobs", "vic", {"job": step_job("y")})
    assert viewer.status_code == 403
    assert len(rig.edge.server.listing()) == before
    missing = rig.call("GET", "/api/edge/jobs/no-such-job", "vic")
    assert missing.status_code == 404 and "no-such-job" in missing.json()["detail"]
    other = rig.call("GET", "/api/edge/jobs?deployment=elsewhere", "vic")
    assert (other.status_code, other.json()["detail"]) == (
        404,
        "no edge deployment 'elsewhere' (configured: main)",
    )
    running = rig.call("POST", "/api/edge/jobs", "rita", {"job": step_job("twice")})
    assert running.status_code == 201
    again = rig.call("POST", "/api/edge/jobs", "rita", {"job": step_job("twice")})
    assert again.status_code == 409 and "a job named 'twice' is running" in again.json()["detail"]


def test_several_named_deployments_are_listed_and_picked_by_name(rig: Rig, tmp_path: Path) -> None:
    main = edge_settings(rig.edge.folder, rig.edge.url["server"])
    same = main["edge_deployments"]["main"]
    settings = {**main, "edge_deployments": {"west": same, "east": same}}
    app = make_app(tmp_path / "two", **settings)
    add_user(app, "rita", "researcher")
    with serve_in_thread(app) as base:
        headers = bearer(app, "rita")
        listed = httpx.get(f"{base}/api/edge/deployments", headers=headers).json()
        assert listed == [
            {"name": "west", "url": rig.edge.url["server"]},
            {"name": "east", "url": rig.edge.url["server"]},
        ]
        body = {"job": step_job("plat-east"), "deployment": "east"}
        made = httpx.post(f"{base}/api/edge/jobs", json=body, headers=headers, timeout=30.0)
        assert made.status_code == 201 and made.json()["deployment"] == "east", made.text
        job_id = made.json()["job_id"]
        for name, who in (("east", "rita"), ("west", None)):  # who did what is per deployment
            jobs = httpx.get(
                f"{base}/api/edge/jobs", params={"deployment": name}, headers=headers
            ).json()
            assert jobs["deployment"] == name
            assert {j["job_id"]: j["submitted_by"] for j in jobs["jobs"]}[job_id] == who
        default = httpx.get(f"{base}/api/edge/jobs", headers=headers).json()
        assert default["deployment"] == "west"  # the first of the settings
        ended = httpx.post(
            f"{base}/api/edge/jobs/{job_id}/abort",
            json={"deployment": "east"},
            headers=headers,
            timeout=30.0,
        )
        assert ended.status_code == 200 and ended.json()["status"] == "cancelled", ended.text
        assert ended.json()["aborted_by"] == "rita"


def test_a_revoked_credential_or_a_down_or_silent_edge_server_is_a_clear_error_never_a_hang(
    rig: Rig, tmp_path: Path
) -> None:
    folder = rig.edge.folder
    home = TrustHome(folder / "trust")
    home.issue("operator-old", "operator").write(bundle_path(folder, "operator-old"))
    settings = edge_settings(folder, rig.edge.url["server"], "operator-old")
    app = make_app(tmp_path / "revoked", **settings)
    add_user(app, "vic", "viewer")
    with serve_in_thread(app) as base:
        headers = bearer(app, "vic")
        assert httpx.get(f"{base}/api/edge/jobs", headers=headers).status_code == 200
        home.revoke("operator-old", "left the team")
        refused = httpx.get(f"{base}/api/edge/jobs", headers=headers, timeout=30.0)
        assert refused.status_code == 502
        detail = refused.json()["detail"]
        assert detail.startswith("edge deployment 'main' (https://127.0.0.1:")
        assert "refused the platform's credential" in detail and "revoked" in detail, detail
    other_tree = provision(tmp_path / "other-tree")  # another CA: its operator is a stranger
    app = make_app(tmp_path / "foreign", **edge_settings(other_tree, rig.edge.url["server"]))
    add_user(app, "vic", "viewer")
    with serve_in_thread(app) as base:
        foreign = httpx.get(f"{base}/api/edge/jobs", headers=bearer(app, "vic"), timeout=30.0)
        assert foreign.status_code == 502
        assert "the TLS handshake failed" in foreign.json()["detail"], foreign.json()
        assert "certificate verify failed" in foreign.json()["detail"], foreign.json()
    down = edge_settings(folder, f"https://127.0.0.1:{free_port()}")
    app = make_app(tmp_path / "down", **down)
    add_user(app, "vic", "viewer")
    with serve_in_thread(app) as base:
        start = time.monotonic()
        gone = httpx.get(f"{base}/api/edge/jobs", headers=bearer(app, "vic"), timeout=30.0)
        assert time.monotonic() - start < 10.0
        assert gone.status_code == 503 and "is unreachable" in gone.json()["detail"]
    with socket.socket() as silent:  # accepts connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        mute = edge_settings(folder, f"https://127.0.0.1:{silent.getsockname()[1]}")
        app = make_app(tmp_path / "mute", **{**mute, "edge_timeout_seconds": 1.0})
        add_user(app, "vic", "viewer")
        with serve_in_thread(app) as base:
            start = time.monotonic()
            slow = httpx.get(f"{base}/api/edge/jobs", headers=bearer(app, "vic"), timeout=30.0)
            assert time.monotonic() - start < 10.0
        assert slow.status_code == 503
        assert slow.json()["detail"].endswith("did not answer within 1 s"), slow.json()
    bare = make_app(tmp_path / "none")
    add_user(bare, "vic", "viewer")
    with serve_in_thread(bare) as base:
        none = httpx.get(f"{base}/api/edge/jobs", headers=bearer(bare, "vic"))
        assert (none.status_code, none.json()["detail"]) == (
            404,
            "no edge deployment is configured (setting edge_deployments)",
        )


def test_a_wrong_kind_or_missing_credential_is_refused_naming_the_setting(
    rig: Rig, tmp_path: Path
) -> None:
    folder = rig.edge.folder
    (tmp_path / "platform.toml").write_text(
        f'[edge_deployments.main]\nurl = "{rig.edge.url["server"]}"\n'
        f'credential = "{bundle_path(folder, "lcp-1-1")}"\n'
    )
    with pytest.raises(SettingsError) as wrong:
        Settings.load(tmp_path)
    assert "edge_deployments.main.credential: " in str(wrong.value)
    assert "is the credential of lcp 'lcp-1-1', not an operator's" in str(wrong.value)
    served = CliRunner().invoke(cli_app, ["serve", "--data", str(tmp_path)])
    assert served.exit_code == 2, served.output
    assert served.output.count("\n") == 1 and "edge_deployments.main.credential: " in served.output
    (tmp_path / "platform.toml").write_text(
        f'[edge_deployments.main]\nurl = "http://127.0.0.1:1"\n'
        f'credential = "{tmp_path / "nowhere.json"}"\n'
    )
    with pytest.raises(SettingsError) as missing:
        Settings.load(tmp_path)
    message = str(missing.value)
    assert "edge_deployments.main.url: String should match pattern" in message
    assert f"edge_deployments.main.credential: {tmp_path / 'nowhere.json'} does not exist" in (
        message
    )


def test_the_edge_jobs_page_shows_a_job_s_version_while_it_runs(rig: Rig, page: Page) -> None:
    errors = PageErrors(page)
    job_id = rig.submit(step_job("plat-page", max_model_version=6, max_model_history=6))["job_id"]
    log_in(page, rig.base, "vic", PASSWORD)
    page.click("#nav [data-nav=edge]")
    page.wait_for_selector(f"#edge-jobs-table tr[data-job='{job_id}'] td.version:text('0')")
    page.click(f"#edge-jobs-table tr[data-job='{job_id}'] a")
    page.wait_for_selector("#edge-job-card:not([hidden])")
    assert page.inner_text("#edge-job-version") == "0"
    worker = threading.Thread(
        target=rig.simulate, args=("plat-page",), kwargs={"devices": 2, "delay": 1.0}
    )
    worker.start()
    shown: list[str] = []

    def finished() -> bool:
        # the status first: once it says succeeded, the version read after it is the last
        # (the page may redraw between the two reads)
        done = page.locator("#edge-job-status [data-status=succeeded]").count() == 1
        text = page.inner_text("#edge-job-version")
        if not shown or shown[-1] != text:
            shown.append(text)
        return done

    assert wait_until(finished, 90.0), shown
    worker.join(60)
    # the page followed the job: version 0, at least one version between, the last
    assert [int(v) for v in shown] == sorted(int(v) for v in shown), shown
    assert shown[0] == "0" and shown[-1] == "6" and len(shown) >= 3, shown
    rows = page.locator("#edge-versions tbody tr").all_inner_texts()
    assert [r.split("\t")[0] for r in rows] == ["6", "5", "4", "3", "2", "1", "0"]
    assert "mean=1.500" in rows[0]
    assert page.inner_text("#edge-job-who") == "submitted by rita"
    row = f"#edge-jobs-table tr[data-job='{job_id}']"  # the list follows too
    page.wait_for_selector(f"{row} td.version:text('6')", timeout=10_000)
    page.wait_for_selector(f"{row} [data-status=succeeded]", timeout=10_000)
    assert page.is_hidden("#edge-form")  # a viewer submits nothing
    assert errors.messages == []
    shots = os.environ.get("REDFL_SCREENSHOTS")
    if shots:
        page.screenshot(path=str(Path(shots) / "edge-jobs.png"), full_page=True)
