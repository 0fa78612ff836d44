"""The dashboard in a real browser (Debian's Chromium under Playwright), against the app in
this process (which executes nothing: runs stay queued), with each run's events written
straight into the store by the test (``stand_in_events``, standing in for the run's job) and
streamed to the page by the real run WebSocket.

The end-to-end flow against a real ``redfl serve`` is in ``test_dashboard_serve.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import browser as browser_helpers
import pytest
from browser import (  # noqa: F401  (fixtures)
    PageErrors,
    browser_fixture,
    log_in,
    serve_in_thread,
    wait_for,
)
from fastapi import FastAPI
from fastapi.testclient import TestClient
from platform_app import PASSWORD, make_team_app, store_run
from playwright.sync_api import Browser, Page
from stand_in_events import append_failure, append_round, append_status, write_model

from redfl.platform.catalog import examples
from redfl.platform.security import digest
from redfl.platform.store import Store

DIGITS = next(e for e in examples() if e.name == "digits_fedavg").config


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return make_team_app(Path(tmp_path_factory.mktemp("dashboard")))


@pytest.fixture(scope="module")
def base(app: FastAPI) -> Iterator[str]:
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    opened = context.new_page()
    errors = PageErrors(opened)
    yield opened
    context.close()
    assert errors.messages == []  # no script error, no CSP violation


def make_run(app: FastAPI, owner: str, rounds: int = 20) -> str:
    """A queued run of ``owner`` (the digits demo config) in the store; its id."""
    runs_dir = app.state.settings.runs_dir
    with app.state.sessions() as session:
        store = Store(session)
        owner_id = store.require_user(owner).id
        run_id = store_run(
            store, owner_id, rounds=rounds, runs_dir=runs_dir, config=DIGITS, name="digits-fedavg"
        )
    (runs_dir / run_id).mkdir(parents=True)
    return run_id


def upload(page: Page, base: str, path: Path, config: str) -> None:
    """Write ``config`` to ``path`` and start it from the runs page's upload form."""
    path.write_text(config)
    page.goto(base + "/#/runs")
    page.set_input_files("#config-file", str(path))
    page.click("#start-upload button")


def last_round(page: Page, chart: str) -> int:
    return int(page.get_attribute(chart, "data-last-round") or -1)


def shows_round(page: Page, rnd: int) -> Callable[[], bool]:
    """Whether the accuracy chart's last round is ``rnd`` (a condition for ``wait_for``)."""
    return lambda: last_round(page, "#accuracy-chart") == rnd


def test_the_page_is_served_with_a_strict_policy(base: str, page: Page) -> None:
    response = page.goto(base + "/")
    assert response is not None and response.status == 200
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    page.wait_for_selector("#login-view:not([hidden])")
    assert page.is_hidden("#top")


def test_a_bad_password_is_refused_on_the_page(base: str, page: Page) -> None:
    page.goto(base + "/")
    page.fill("#login-form input[name=username]", "rita")
    page.fill("#login-form input[name=password]", "not her password")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#notice:text('invalid username or password')")
    assert page.is_visible("#login-view")


def test_researcher_starts_an_example_and_an_uploaded_config(
    app: FastAPI, base: str, page: Page, tmp_path: Path
) -> None:
    log_in(page, base, "rita", PASSWORD)
    assert page.is_visible("#start-button")
    assert page.is_hidden("[data-nav=users]")
    names = page.eval_on_selector_all("#example-select option", "os => os.map(o => o.value)")
    assert names == [e.name for e in examples()]
    page.select_option("#example-select", "digits_fedavg")
    page.click("#start-button")
    page.wait_for_selector("#run-view:not([hidden]) #run-status[data-status=queued]")
    run_id = page.url.rsplit("/", 1)[1]
    with app.state.sessions() as session:
        run = Store(session).require_run(run_id)
        assert (run.config_text, run.owner.name if run.owner else None) == (DIGITS, "rita")
    assert page.text_content("#run-progress") == "round 0 of 20"

    upload(page, base, tmp_path / "mine.toml", DIGITS.replace("digits-fedavg", "uploaded"))
    page.wait_for_selector("#run-name:text('uploaded')")

    upload(page, base, tmp_path / "bad.toml", DIGITS.replace("rounds = 20", "rounds = 0"))
    page.wait_for_selector("#notice:has-text('Cannot start the run')")
    assert "rounds" in (page.text_content("#notice") or "")
    page.goto(base + "/#/runs")
    page.wait_for_selector("#runs-table tbody tr")
    listed = page.eval_on_selector_all("#runs-table tbody tr a", "as => as.map(a => a.textContent)")
    assert listed[:2] == ["uploaded", "digits-fedavg"]


def test_charts_and_failures_follow_the_event_stream_live(
    app: FastAPI, base: str, page: Page
) -> None:
    run_id = make_run(app, "rita")
    log_in(page, base, "rita", PASSWORD)
    page.goto(f"{base}/#/runs/{run_id}")
    page.wait_for_selector("#live-state:text('live')")
    assert page.is_visible("#cancel-run") and page.is_disabled("#download-model")
    append_status(app, run_id, "running")
    page.wait_for_selector("#run-status[data-status=running]")
    for rnd in range(1, 21):
        append_round(app, run_id, rnd, accuracy=0.5 + rnd / 50, loss=2.0 / rnd)
        if rnd in (1, 10):  # the page shows each round as it comes, not only at the end
            wait_for(shows_round(page, rnd), 10, f"round {rnd} in the chart")
    append_failure(app, run_id, 7, "client-3", "ValueError: NaN in update")
    model = write_model(app, run_id)
    append_status(app, run_id, "succeeded")
    page.wait_for_selector("#run-status[data-status=succeeded]")
    wait_for(lambda: last_round(page, "#accuracy-chart") == 20, 10, "round 20 in the chart")
    assert last_round(page, "#loss-chart") == 20
    assert page.locator("#accuracy-chart circle").count() == 20
    assert page.locator("#loss-chart circle").count() == 40  # evaluation and training loss
    assert page.text_content("#accuracy-chart text.last") == "0.900"
    assert page.text_content("#run-progress") == "round 20 of 20"
    cells = page.eval_on_selector_all("#failures-table td", "tds => tds.map(t => t.textContent)")
    assert cells == ["7", "client-3", "fit", "ValueError: NaN in update"]
    page.wait_for_selector("#live-state:text('finished')")
    assert page.is_hidden("#cancel-run")
    with page.expect_download() as download:
        page.click("#download-model")
    assert download.value.suggested_filename == f"digits-fedavg-{run_id}.safetensors"
    assert Path(download.value.path()).read_bytes() == model


def test_a_late_subscriber_sees_every_round_so_far(app: FastAPI, base: str, page: Page) -> None:
    run_id = make_run(app, "rita", rounds=5)
    append_status(app, run_id, "running")
    for rnd in (1, 2, 3):
        append_round(app, run_id, rnd, accuracy=0.1 * rnd, loss=1.0)
    log_in(page, base, "vic", PASSWORD)
    page.goto(f"{base}/#/runs/{run_id}")
    wait_for(lambda: last_round(page, "#accuracy-chart") == 3, 10, "the replayed rounds")
    assert page.text_content("#run-progress") == "round 3 of 5"
    append_round(app, run_id, 4, accuracy=0.4, loss=1.0)
    wait_for(lambda: last_round(page, "#accuracy-chart") == 4, 10, "the live round 4")


def test_researcher_cancels_a_queued_run(app: FastAPI, base: str, page: Page) -> None:
    run_id = make_run(app, "rita")
    log_in(page, base, "rita", PASSWORD)
    page.goto(f"{base}/#/runs/{run_id}")
    page.click("#cancel-run")
    page.wait_for_selector("#run-status[data-status=cancelled]")
    assert page.is_hidden("#cancel-run")
    with app.state.sessions() as session:
        assert Store(session).require_run(run_id).status == "cancelled"


def test_viewer_sees_no_start_or_cancel_and_is_refused_a_forced_start(
    app: FastAPI, base: str, page: Page
) -> None:
    run_id = make_run(app, "rita")
    log_in(page, base, "vic", PASSWORD)
    assert page.is_hidden("#start-panel") and page.is_hidden("#start-button")
    page.goto(f"{base}/#/runs/{run_id}")
    page.wait_for_selector("#run-status[data-status=queued]")
    assert page.is_hidden("#cancel-run")
    forced = page.evaluate(
        """async (config) => {
            const token = JSON.parse(sessionStorage.getItem("redfl.session")).access;
            const r = await fetch("/api/runs", {method: "POST", body: JSON.stringify({config}),
                headers: {"Content-Type": "application/json", Authorization: `Bearer ${token}`}});
            return [r.status, (await r.json()).detail];
        }""",
        DIGITS,
    )
    assert forced == [403, "needs role 'researcher', you are 'viewer'"]


def test_admin_adds_a_user_and_changes_a_role(app: FastAPI, base: str, page: Page) -> None:
    log_in(page, base, "ada", PASSWORD)
    refused = page.evaluate(
        """async () => {
            const api = await import("/static/api.js");
            const body = {name: "nina", role: "viewer", password: "hunter2"};
            try { await api.request("POST", "/api/users", body); } catch (error) {
                return [error.status, error.message];
            }
        }"""
    )
    assert refused == [
        422,
        "body.password: String should have at least 8 characters (got a hidden value)",
    ]
    page.click("[data-nav=users]")
    page.wait_for_selector("#users-table tbody tr")
    page.fill("#user-form input[name=name]", "nina")
    page.select_option("#user-form select[name=role]", "viewer")
    page.fill("#user-form input[name=password]", "a long password")
    page.click("#user-form button[type=submit]")
    page.wait_for_selector("#users-table select[data-user=nina]")
    page.select_option("#users-table select[data-user=nina]", "researcher")
    page.wait_for_selector("#notice:text('nina is now researcher.')")
    with app.state.sessions() as session:
        assert Store(session).require_user("nina").role == "researcher"
    page.click("#logout")
    page.wait_for_selector("#login-view:not([hidden])")
    assert page.evaluate("sessionStorage.getItem('redfl.session')") is None


def test_only_the_dashboards_own_files_are_served(app: FastAPI) -> None:
    with TestClient(app) as client:
        script = client.get("/static/app.js")
        assert script.status_code == 200
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert b'from "./api.js"' in script.content
        assert client.get("/static/missing.js").status_code == 404
        assert client.get("/static/__init__.py").status_code == 422  # not a served kind
        assert client.get("/static/..%2Fsettings.py").status_code in (404, 422)
        assert client.get("/static/%2E%2E%2Fjwt-secret").status_code in (404, 422)


def test_an_expired_access_token_is_refreshed_once(app: FastAPI, base: str, page: Page) -> None:
    run_id = make_run(app, "rita", rounds=3)
    append_round(app, run_id, 1, accuracy=0.3, loss=1.0)
    log_in(page, base, "vic", PASSWORD)
    before = page.evaluate("JSON.parse(sessionStorage.getItem('redfl.session'))")
    page.evaluate(
        """() => {
            const s = JSON.parse(sessionStorage.getItem("redfl.session"));
            sessionStorage.setItem("redfl.session", JSON.stringify({...s, access: "expired"}));
        }"""
    )
    page.reload()
    page.goto(f"{base}/#/runs/{run_id}")
    wait_for(shows_round(page, 1), 10, "round 1 after a refresh")
    after = page.evaluate("JSON.parse(sessionStorage.getItem('redfl.session'))")
    assert after["name"] == "vic" and after["access"] != "expired"  # (may equal the first:
    # tokens issued within one second are the same)
    assert after["refresh"] != before["refresh"]  # refresh tokens are single use
    with app.state.sessions() as session:  # the old refresh token is spent
        assert Store(session).use_refresh_token(digest(before["refresh"])) is None


def test_a_missing_chromium_fails_naming_the_debian_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(browser_helpers, "CHROMIUM", Path("/nonexistent/chromium"))
    with (
        pytest.raises(pytest.fail.Exception, match=r"install the Debian package chromium"),
        browser_helpers.chromium(),
    ):
        pass
