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
    page_fixture,
    serve_in_thread,
    wait_for,
)
from fastapi import FastAPI
from fastapi.testclient import TestClient
from platform_app import PASSWORD, add_user, make_team_app, store_run
from playwright.sync_api import Page
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


def make_run(
    app: FastAPI,
    owner: str,
    rounds: int = 20,
    name: str = "digits-fedavg",
    tags: list[str] | None = None,
    config: str = DIGITS,
) -> str:
    """A queued run of ``owner`` (the digits demo config) in the store; its id."""
    runs_dir = app.state.settings.runs_dir
    with app.state.sessions() as session:
        store = Store(session)
        owner_id = store.require_user(owner).id
        run_id = store_run(
            store, owner_id, rounds=rounds, runs_dir=runs_dir, config=config, name=name
        )
        if tags:
            store.set_tags(run_id, tags)
    (runs_dir / run_id).mkdir(parents=True)
    return run_id


def upload(page: Page, base: str, path: Path, config: str) -> None:
    """Write ``config`` to ``path`` and start it from the runs page's upload form."""
    path.write_text(config)
    page.goto(base + "/#/runs")
    page.set_input_files("#config-file", str(path))
    page.click("#start-upload button")


def chart(metric: str) -> str:
    """The selector of the run page's chart of ``metric``."""
    return f"#charts svg[data-metric='{metric}']"


def last_round(page: Page, selector: str) -> int:
    return int(page.get_attribute(selector, "data-last-round") or -1)


def shows_round(page: Page, rnd: int) -> Callable[[], bool]:
    """Whether the accuracy chart's last round is ``rnd`` (a condition for ``wait_for``)."""
    return lambda: last_round(page, chart("accuracy")) == rnd


def texts(page: Page, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_text_contents()]


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
    page.fill("#start-tags", "baseline, lr-0.3")
    page.click("#start-button")
    page.wait_for_selector("#run-view:not([hidden]) #run-status[data-status=queued]")
    run_id = page.url.rsplit("/", 1)[1]
    with app.state.sessions() as session:
        store = Store(session)
        run = store.require_run(run_id)
        assert (run.config_text, run.owner.name if run.owner else None) == (DIGITS, "rita")
        assert store.run_summary(run_id)["tags"] == ["baseline", "lr-0.3"]
    assert page.text_content("#run-progress") == "round 0 of 20"
    assert texts(page, "#run-tags .tag") == ["baseline", "lr-0.3"]

    upload(page, base, tmp_path / "mine.toml", DIGITS.replace("digits-fedavg", "uploaded"))
    page.wait_for_selector("#run-name:text('uploaded')")

    upload(page, base, tmp_path / "bad.toml", DIGITS.replace("lr = 0.3", 'lr = "abc"'))
    page.wait_for_selector("#notice:has-text('Cannot start the run')")
    assert "client.options.lr" in (page.text_content("#notice") or "")
    page.goto(base + "/#/runs")
    page.wait_for_selector("#runs-table tbody tr")
    listed = texts(page, "#runs-table tbody tr td:nth-child(3) a")
    assert listed[:2] == ["uploaded", "digits-fedavg"]


def test_charts_follow_the_event_stream_live_and_metrics_are_chosen(
    app: FastAPI, base: str, page: Page
) -> None:
    run_id = make_run(app, "rita")
    log_in(page, base, "rita", PASSWORD)
    page.goto(f"{base}/#/runs/{run_id}")
    page.wait_for_selector("#live-state:text('live')")
    assert page.is_visible("#cancel-run") and page.is_hidden("#stop-run")
    assert page.is_hidden("#download-model")  # no model yet: no button
    append_status(app, run_id, "running")
    page.wait_for_selector("#run-status[data-status=running]")
    assert page.is_visible("#stop-run")
    for rnd in range(1, 21):
        append_round(app, run_id, rnd, accuracy=0.5 + rnd / 50, loss=2.0 / rnd)
        if rnd in (1, 10):  # the page shows each round as it comes, not only at the end
            wait_for(shows_round(page, rnd), 10, f"round {rnd} in the chart")
    append_failure(app, run_id, 7, "client-3", "ValueError: NaN in update")
    model = write_model(app, run_id)
    append_status(app, run_id, "succeeded")
    page.wait_for_selector("#run-status[data-status=succeeded]")
    wait_for(shows_round(page, 20), 10, "round 20 in the chart")
    shown = page.eval_on_selector_all("#charts svg", "ss => ss.map(s => s.dataset.metric)")
    assert shown == ["accuracy", "loss", "train_loss"]
    assert page.locator(f"{chart('accuracy')} circle").count() == 20
    assert page.text_content(f"{chart('accuracy')} text.last") == "0.900"
    assert page.text_content("#run-progress") == "round 20 of 20"
    choices = page.eval_on_selector_all("#metric-chooser input", "is => is.map(i => i.value)")
    assert choices[:3] == ["accuracy", "loss", "train_loss"] and "seconds" in choices
    page.uncheck("#metric-chooser input[value=loss]")
    page.check("#metric-chooser input[value=sampled]")
    shown = page.eval_on_selector_all("#charts svg", "ss => ss.map(s => s.dataset.metric)")
    assert shown == ["accuracy", "train_loss", "sampled"]
    assert page.text_content(f"{chart('sampled')} text.last") == "10.000"
    assert page.text_content("#failure-count") == "1"
    page.wait_for_selector("#live-state:text('finished')")
    assert page.is_hidden("#cancel-run") and page.is_hidden("#stop-run")
    page.wait_for_selector("#download-model:not([hidden])")
    with page.expect_download() as download:
        page.click("#download-model")
    assert download.value.suggested_filename == f"digits-fedavg-{run_id}.safetensors"
    assert Path(download.value.path()).read_bytes() == model
    with page.expect_download() as csv:
        page.click("#download-csv")
    lines = Path(csv.value.path()).read_text().splitlines()
    assert lines[0].startswith("round,sampled") and len(lines) == 21


def test_a_late_subscriber_sees_every_round_so_far(app: FastAPI, base: str, page: Page) -> None:
    run_id = make_run(app, "rita", rounds=5)
    append_status(app, run_id, "running")
    for rnd in (1, 2, 3):
        append_round(app, run_id, rnd, accuracy=0.1 * rnd, loss=1.0)
    log_in(page, base, "vic", PASSWORD)
    page.goto(f"{base}/#/runs/{run_id}")
    wait_for(shows_round(page, 3), 10, "the replayed rounds")
    assert page.text_content("#run-progress") == "round 3 of 5"
    append_round(app, run_id, 4, accuracy=0.4, loss=1.0)
    wait_for(shows_round(page, 4), 10, "the live round 4")


def test_researcher_cancels_a_queued_run_and_stops_a_running_one(
    app: FastAPI, base: str, page: Page
) -> None:
    queued, running = make_run(app, "rita"), make_run(app, "rita")
    append_status(app, running, "running")
    log_in(page, base, "rita", PASSWORD)
    page.goto(f"{base}/#/runs/{queued}")
    page.wait_for_selector("#run-status[data-status=queued]")
    assert page.is_hidden("#stop-run")  # nothing to stop yet: cancel does it
    page.click("#cancel-run")
    page.wait_for_selector("#run-status[data-status=cancelled]")
    assert page.is_hidden("#cancel-run")
    page.goto(f"{base}/#/runs/{running}")
    page.wait_for_selector("#run-status[data-status=running]")
    page.click("#stop-run")
    page.wait_for_selector("#notice:text('Stopping the run now.')")
    assert page.is_hidden("#stop-run")
    with app.state.sessions() as session:
        store = Store(session)
        assert store.require_run(queued).status == "cancelled"
        assert store.stop_request(running) == "stopped by rita"
    append_status(app, running, "stopped", "stopped by rita")  # as its job would end it
    page.wait_for_selector("#run-status[data-status=stopped]")
    page.wait_for_selector("#run-error:text('stopped by rita')")
    assert page.is_hidden("#cancel-run")


def test_the_runs_table_shows_figures_filters_pages_and_updates_live(
    app: FastAPI, base: str, page: Page
) -> None:
    add_user(app, "rob", "researcher")
    ids = [
        make_run(
            app, "rob" if n % 3 == 0 else "rita", rounds=10, name=f"sweep-{n:02d}", tags=["sweep"]
        )
        for n in range(28)
    ]
    finished = ids[-1]  # the newest
    append_status(app, finished, "running")
    for rnd, accuracy in ((1, 0.5), (2, 0.75), (3, 0.7)):
        append_round(app, finished, rnd, accuracy=accuracy, loss=1.0)
    append_status(app, finished, "succeeded")
    log_in(page, base, "vic", PASSWORD)
    page.wait_for_selector("#live-runs:text('live')")
    total = page.text_content("#runs-count") or ""
    row = page.locator(f"#runs-table tr[data-run='{finished}']")
    cells = [t.strip() for t in row.locator("td").all_text_contents()]
    assert cells[1:4] == [finished[:8], "sweep-27 sweep", "succeeded"]
    assert cells[4] == "rob" and cells[6:9] == ["3/10", "0.750", "0.700"]
    assert page.locator("#runs-table tbody tr").count() == 25
    assert (page.text_content("#runs-page") or "").startswith("1-25 of ")
    page.click("#runs-next")
    page.wait_for_selector("#runs-page:text-matches('^26-')")
    assert page.is_disabled("#runs-next") and page.is_enabled("#runs-prev")
    page.fill("#runs-filter input[name=owner]", "rob")
    page.select_option("#runs-filter select[name=status]", "succeeded")
    page.click("#runs-filter button[type=submit]")
    page.wait_for_selector("#runs-count:text('(1)')")
    assert texts(page, "#runs-table tbody tr td:nth-child(3) a") == ["sweep-27"]
    page.click("#runs-filter button[type=reset]")
    page.wait_for_selector(f"#runs-count:text('{total}')")
    page.fill("#runs-filter input[name=q]", "SWEEP-0")
    page.click("#runs-filter button[type=submit]")
    page.wait_for_selector("#runs-count:text('(10)')")
    page.click("#runs-filter button[type=reset]")
    page.wait_for_selector(f"#runs-count:text('{total}')")
    live = ids[-2]
    append_status(app, live, "running")
    append_round(app, live, 1, accuracy=0.625, loss=1.0)  # no reload: the socket says it
    page.wait_for_selector(f"#runs-table tr[data-run='{live}'] td[data-col=final]:text('0.625')")
    assert page.text_content(f"#runs-table tr[data-run='{live}'] td[data-col=rounds]") == "1/10"
    newest = make_run(app, "rita", name="brand-new")
    page.wait_for_selector(f"#runs-table tbody tr:first-child[data-run='{newest}']")
    page.click(f"#runs-table tr[data-run='{finished}'] .tag[data-tag=sweep]")
    page.wait_for_selector("#runs-count:text('(28)')")
    assert page.input_value("#runs-filter input[name=tag]") == "sweep"


def test_config_summary_failures_events_and_log_tabs(app: FastAPI, base: str, page: Page) -> None:
    run_id = make_run(app, "rita", rounds=3)
    append_status(app, run_id, "running")
    for rnd in (1, 2, 3):
        append_round(app, run_id, rnd, accuracy=0.3 * rnd, loss=1.0)
    for n in range(60):
        append_failure(app, run_id, 1 + n % 3, f"client-{n}", "ValueError: boom")
    folder = app.state.settings.runs_dir / run_id
    (folder / "run.log").write_text("".join(f"line {n}\n" for n in range(100)))
    (folder / "summary.json").write_text('{"status": "succeeded", "accuracy": 0.9, "rounds": 3}')
    append_status(app, run_id, "succeeded")
    log_in(page, base, "vic", PASSWORD)
    page.goto(f"{base}/#/runs/{run_id}")
    page.wait_for_selector("#live-state:text('finished')")
    page.click("#run-tabs [data-tab=config]")
    assert page.text_content("#run-config") == DIGITS
    assert page.is_hidden("#charts")
    page.click("#run-tabs [data-tab=summary]")
    summary = dict(
        zip(texts(page, "#summary-table th"), texts(page, "#summary-table td"), strict=True)
    )
    assert summary == {"status": "succeeded", "accuracy": "0.9", "rounds": "3"}
    page.click("#run-tabs [data-tab=failures]")
    page.wait_for_selector("#failures-page:text('1-50 of 60')")
    assert page.locator("#failures-table tbody tr").count() == 50
    page.click("#failures-next")
    page.wait_for_selector("#failures-page:text('51-60 of 60')")
    assert texts(page, "#failures-table tbody tr td:nth-child(2)")[0] == "client-50"
    page.click("#run-tabs [data-tab=events]")
    page.wait_for_selector("#events-table tbody tr")
    assert page.locator("#events-table tbody tr").count() == 50
    assert texts(page, "#events-table tbody tr td:nth-child(3)")[:2] == ["status", "round_finished"]
    page.click("#events-more")
    page.wait_for_selector("#events-table tbody tr[data-seq='50']")
    page.click("#run-tabs [data-tab=log]")
    page.wait_for_selector("#run-log:has-text('line 99')")
    assert (page.text_content("#run-log") or "").startswith("line 0\n")


def test_compare_overlays_a_metric_and_highlights_config_differences(
    app: FastAPI, base: str, page: Page
) -> None:
    first = make_run(app, "rita", rounds=3, name="cmp-a")
    second = make_run(
        app, "rita", rounds=3, name="cmp-b", config=DIGITS.replace("lr = 0.3", "lr = 0.1")
    )
    for run_id, scale in ((first, 0.3), (second, 0.2)):
        append_status(app, run_id, "running")
        for rnd in (1, 2, 3):
            append_round(app, run_id, rnd, accuracy=scale * rnd, loss=1.0 / rnd)
        append_status(app, run_id, "succeeded")
    log_in(page, base, "vic", PASSWORD)
    page.fill("#runs-filter input[name=q]", "cmp-")
    page.click("#runs-filter button[type=submit]")
    page.wait_for_selector("#runs-count:text('(2)')")
    assert page.is_disabled("#compare-selected")
    page.check(f"[data-select='{first}']")
    page.check(f"[data-select='{second}']")
    page.click("#compare-selected")
    page.wait_for_selector("#compare-chart g.series")
    assert page.url.endswith(f"#/compare/{second},{first}") or page.url.endswith(
        f"#/compare/{first},{second}"
    )
    series = page.eval_on_selector_all(
        "#compare-chart g.series", "gs => gs.map(g => g.dataset.points)"
    )
    assert series == ["3", "3"]
    page.select_option("#compare-metric", "loss")
    page.wait_for_selector("#compare-chart[data-metric=loss]")
    differing = page.eval_on_selector_all(
        "#compare-config tr.diff", "rs => rs.map(r => r.dataset.key)"
    )
    assert differing == ["client.options.lr"]
    assert page.locator("#compare-config tbody tr").count() > 40
    page.check("#only-differences")
    assert texts(page, "#compare-config tbody th") == ["client.options.lr"]
    assert sorted(texts(page, "#compare-config tbody td")) == ["0.1", "0.3"]


def test_viewer_sees_no_start_cancel_stop_or_tag_editing_and_is_refused_a_forced_start(
    app: FastAPI, base: str, page: Page
) -> None:
    run_id = make_run(app, "rita")
    append_status(app, run_id, "running")
    log_in(page, base, "vic", PASSWORD)
    assert page.is_hidden("#start-panel") and page.is_hidden("#start-button")
    page.goto(f"{base}/#/runs/{run_id}")
    page.wait_for_selector("#run-status[data-status=running]")
    assert page.is_hidden("#cancel-run") and page.is_hidden("#stop-run")
    assert page.is_hidden("#tags-form")
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


def test_a_failed_run_without_a_model_offers_no_model(app: FastAPI, base: str, page: Page) -> None:
    run_id = make_run(app, "rita")
    append_status(app, run_id, "running")
    append_status(app, run_id, "failed", "ValueError: the data is gone")
    log_in(page, base, "rita", PASSWORD)
    page.goto(f"{base}/#/runs/{run_id}")
    page.wait_for_selector("#run-error:text('ValueError: the data is gone')")
    assert page.is_hidden("#download-model") and page.is_visible("#download-csv")
    assert page.is_hidden("#cancel-run") and page.is_hidden("#stop-run")


def test_admin_adds_deletes_resets_and_changes_users(app: FastAPI, base: str, page: Page) -> None:
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
    assert page.text_content("#users-table tr[data-user=ada] td:last-child") == "you"
    page.fill("#user-form input[name=name]", "nina")
    page.select_option("#user-form select[name=role]", "viewer")
    page.fill("#user-form input[name=password]", "a long password")
    page.click("#user-form button[type=submit]")
    page.wait_for_selector("#users-table select[data-user=nina]")
    page.select_option("#users-table select[data-user=nina]", "researcher")
    page.wait_for_selector("#notice:text('nina is now researcher.')")
    page.fill("form[data-password=nina] input", "another long one")
    page.click("form[data-password=nina] button")
    page.wait_for_selector("#notice:has-text('New password set for nina')")
    with TestClient(app) as client:
        old = {"username": "nina", "password": "a long password"}
        assert client.post("/api/auth/login", json=old).status_code == 401
        new = {"username": "nina", "password": "another long one"}
        assert client.post("/api/auth/login", json=new).status_code == 200
    with app.state.sessions() as session:
        assert Store(session).require_user("nina").role == "researcher"
    page.click("[data-delete=nina]")
    page.wait_for_selector("[data-delete=nina]:text('Delete nina?')")  # asks once more
    page.click("[data-delete=nina]")
    page.wait_for_selector("#notice:has-text('Deleted nina')")
    assert page.locator("#users-table tr[data-user=nina]").count() == 0
    with app.state.sessions() as session:
        assert Store(session).user_by_name("nina") is None
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
