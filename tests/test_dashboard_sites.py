"""Sites on the dashboard, in a real browser (Debian's Chromium under Playwright): an admin
adds a site and downloads its credential bundle (offered once), revokes it; a researcher has
no sites page; a run's page shows each site's state and follows it while the run goes on."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import (  # noqa: F401  (fixtures)
    PageErrors,
    browser_fixture,
    log_in,
    page_fixture,
    serve_in_thread,
)
from fastapi import FastAPI
from platform_app import PASSWORD, SITES_RUN, make_team_app, store_run
from playwright.sync_api import Page
from stand_in_events import append_status, site_failure, write_event

from redfl.platform.store import Store
from redfl.run.api import run
from redfl.trust import Bundle


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return make_team_app(Path(tmp_path_factory.mktemp("dashboard-sites")))


@pytest.fixture(scope="module")
def base(app: FastAPI) -> Iterator[str]:
    with serve_in_thread(app) as url:
        yield url


def test_admin_adds_a_site_downloads_its_bundle_once_and_revokes_it(
    base: str, page: Page, tmp_path: Path
) -> None:
    log_in(page, base, "ada", PASSWORD)
    page.click("#nav [data-nav=sites]")
    page.wait_for_selector("#sites-view:not([hidden])")
    page.fill("#site-form input[name=name]", "alpha")
    page.click("#site-form button[type=submit]")
    page.wait_for_selector("#sites-table tr[data-site=alpha] td.state:text('valid')")
    assert page.inner_text("#site-bundle-name") == "alpha"
    with page.expect_download() as download:
        page.click("#site-bundle-download")
    saved = tmp_path / "alpha.json"
    download.value.save_as(saved)
    data = json.loads(saved.read_text())
    bundle = Bundle(data["key"], data["cert"], data["ca"], data["fields"])
    assert (bundle.identity.name, bundle.identity.kind) == ("alpha", "site")
    assert bundle.fields == {"server_url": "https://127.0.0.1:8443"}
    page.reload()  # the bundle is not offered again
    page.wait_for_selector("#sites-table tr[data-site=alpha]")
    assert page.is_hidden("#site-bundle")
    page.click("[data-revoke=alpha]")
    page.click("[data-revoke=alpha]")  # armed, then confirmed
    page.wait_for_selector(
        "#sites-table tr[data-site=alpha] td.state:text('revoked: revoked from the dashboard')"
    )


def test_a_researcher_has_no_sites_page(base: str, page: Page) -> None:
    log_in(page, base, "rita", PASSWORD)
    assert page.locator("#nav [data-nav=sites]").count() == 0
    page.goto(f"{base}/#/sites")
    page.wait_for_selector("#runs-view:not([hidden])")  # the first page instead
    assert page.is_hidden("#sites-view")


def test_the_run_page_shows_and_follows_each_sites_state(
    app: FastAPI, base: str, page: Page
) -> None:
    runs_dir = app.state.settings.runs_dir
    with app.state.sessions() as session:
        store = Store(session)
        run_id = store_run(
            store, store.require_user("rita").id, runs_dir=runs_dir, config=SITES_RUN
        )
    folder = runs_dir / run_id
    local = tomllib.loads(SITES_RUN.replace('runtime = "sites"', 'runtime = "local"'))
    assert run(local, out=folder).status == "succeeded"  # the folder a sites run writes
    write_event(folder, type="site_joined", time=100.0, site="alpha", address="10.0.0.1:5000")
    write_event(folder, type="site_round", time=101.0, site="alpha", round=1)
    append_status(app, run_id, "running")
    log_in(page, base, "vic", PASSWORD)
    page.goto(f"{base}/#/runs/{run_id}")
    page.wait_for_selector("#run-sites-card:not([hidden]) tr[data-site=alpha]")
    assert page.inner_text("#run-sites tr[data-site=alpha] td.connected") == "yes"
    assert page.inner_text("#run-sites tr[data-site=alpha] td.rounds") == "1"
    assert page.inner_text("#run-sites tr[data-site=beta] td.connected") == "no"
    assert page.inner_text("#run-sites-count") == "1 of 2 connected"
    write_event(folder, type="site_round", time=102.0, site="alpha", round=2)
    site_failure(folder, "beta", 2, 102.5)
    page.wait_for_selector("#run-sites tr[data-site=alpha] td.rounds:text('2')")
    page.wait_for_selector("#run-sites tr[data-site=beta] td.failures:text('1')")
