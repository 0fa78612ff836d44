"""End to end in a real browser against a real ``redfl serve``: users made with
``redfl users create`` (password on stdin), a researcher starts the bundled demo run from
the page and watches its accuracy chart reach round 20 over the WebSocket, then downloads
the model; a viewer has no start button and is refused a forced start (403).

The run executes for real: ``redfl serve`` starts its own Ray head (stopped by the fixture)
and submits the run as a Ray job, whose events reach the page over the run WebSocket.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser import (  # noqa: F401  (fixtures)
    PageErrors,
    browser_fixture,
    log_in,
    wait_for,
)
from playwright.sync_api import Browser, Page
from waiting import free_port

from redfl.runtime.jobs import read_head, stop_head

REDFL = str(Path(sys.executable).parent / "redfl")
"""The console script of this environment."""
PASSWORDS = {"rita": "researcher password", "vic": "viewer password"}
LIVE_DEADLINE = 90.0
"""Seconds for the demo (100 clients, 20 rounds) to reach round 20, Ray's start included."""


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``redfl serve`` on a free port and a temp data folder, with a researcher and a
    viewer created by the CLI."""
    folder = tmp_path_factory.mktemp("serve")
    data = folder / "data"
    for name, role in (("rita", "researcher"), ("vic", "viewer")):
        created = subprocess.run(
            [REDFL, "users", "create", name, "--role", role, "--data", str(data)],
            input=(PASSWORDS[name] + "\n").encode(),
            capture_output=True,
            check=False,
        )
        assert created.returncode == 0, created.stderr.decode()
    port = free_port()
    log = folder / "serve.log"
    with log.open("wb") as stderr:
        server = subprocess.Popen(
            [REDFL, "serve", "--port", str(port), "--data", str(data)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: server.poll() is not None or _healthy(url + "/api/health"), 60, "serve")
        assert server.poll() is None, log.read_text()
        yield url
    finally:
        server.terminate()
        server.wait(30)
        head = read_head(data)  # the Ray head this server started for its runs outlives it
        if head is not None:
            stop_head(head.pid, timeout=5)  # Ray drains for 30 s on SIGTERM; then SIGKILL


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    yield context.new_page()
    context.close()


def safetensors_names(blob: bytes) -> set[str]:
    """The tensor names in a safetensors file's JSON header."""
    (size,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + size])
    return {k for k in header if k != "__metadata__"}


def test_researcher_runs_the_demo_live(base: str, page: Page) -> None:
    errors = PageErrors(page)
    log_in(page, base, "rita", PASSWORDS["rita"])
    page.select_option("#example-select", "digits_fedavg")
    page.click("#start-button")
    page.wait_for_selector("#run-view:not([hidden]) #run-status")
    run_id = page.url.rsplit("/", 1)[1]
    seen: list[int] = []

    def round_shown() -> bool:
        last = int(page.get_attribute("#charts svg[data-metric=accuracy]", "data-last-round") or 0)
        if last and (not seen or seen[-1] != last):
            seen.append(last)
        return last == 20

    wait_for(
        round_shown,
        LIVE_DEADLINE,
        lambda: (
            f"round 20 of run {run_id} in the chart (status "
            f"{page.get_attribute('#run-status', 'data-status')!r}, rounds shown {seen}; "
            "a run that stays queued: its Ray job never started; see the data folder's "
            "ray-head.log)"
        ),
    )
    assert len(seen) > 1, f"the chart jumped straight to round 20: {seen}"  # it was live
    page.wait_for_selector("#run-status[data-status=succeeded]", timeout=30_000)
    accuracy = float(page.text_content("#charts svg[data-metric=accuracy] text.last") or 0)
    assert accuracy > 0.8  # the demo's central accuracy after 20 rounds
    page.wait_for_selector("#download-model:not([hidden])", timeout=30_000)
    with page.expect_download() as download:
        page.click("#download-model")
    blob = Path(download.value.path()).read_bytes()
    assert safetensors_names(blob)  # a real safetensors file with tensors
    assert errors.messages == []


def test_viewer_sees_no_start_button_and_gets_403_forcing_a_start(base: str, page: Page) -> None:
    errors = PageErrors(page)
    log_in(page, base, "vic", PASSWORDS["vic"])
    assert page.is_hidden("#start-button") and page.is_hidden("#start-panel")
    forced = page.evaluate(
        """async () => {
            const examples = await (await fetch("/api/examples", {headers: {Authorization:
                `Bearer ${JSON.parse(sessionStorage.getItem("redfl.session")).access}`}})).json();
            const token = JSON.parse(sessionStorage.getItem("redfl.session")).access;
            const r = await fetch("/api/runs", {method: "POST",
                headers: {"Content-Type": "application/json", Authorization: `Bearer ${token}`},
                body: JSON.stringify({config: examples[0].config})});
            return r.status;
        }"""
    )
    assert forced == 403
    assert errors.messages == []
