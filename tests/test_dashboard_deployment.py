"""A run's served model on the dashboard, in a real browser (Debian's Chromium under
Playwright), against the app in this process deploying on real Ray Serve (the session's
Ray): the owner deploys, predicts through the form and stops it; a viewer sees it and
predicts, with no deploy or stop button.

With ``REDFL_SCREENSHOTS=<folder>`` the page with a prediction is saved there as
``deployment.png`` (the README's picture).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
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
from platform_app import PASSWORD, add_user, make_app, trained_run
from playwright.sync_api import Browser, Page

from redfl.data.digits import load_digits_arrays
from redfl.run.serving import load_run
from redfl.runtime.serving import deployment_states


@pytest.fixture(scope="module")
def app(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    from ray import serve

    address = ray_session.get_runtime_context().gcs_address
    made = make_app(
        Path(tmp_path_factory.mktemp("dashboard")),
        ray_address=address,
        serving_replica_cpus=0.25,
    )
    for name, role in (("rita", "researcher"), ("vic", "viewer")):
        add_user(made, name, role)
    yield made
    serve.shutdown()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def base(app: FastAPI) -> Iterator[str]:
    with serve_in_thread(app) as url:
        yield url


def predict_in_form(page: Page, rows: np.ndarray) -> list[str]:
    page.fill("#predict-inputs", "\n".join(" ".join(f"{v:g}" for v in row) for row in rows))
    page.click("#predict-form button[type=submit]")
    page.wait_for_selector(f"#predict-output:not([hidden]) tbody tr[data-row='{len(rows) - 1}']")
    return [t.split(" ")[0] for t in page.locator("#predict-output td.top").all_inner_texts()]


def test_owner_deploys_predicts_and_stops_and_a_viewer_only_predicts(
    app: FastAPI, base: str, browser: Browser, page: Page
) -> None:
    run_id = trained_run(app, "rita")
    x, _ = load_digits_arrays()
    rows = np.array(x[:3])
    served = load_run(app.state.settings.runs_dir / run_id)
    expected = [str(int(i)) for i in served.predictor(served.parameters, rows).argmax(axis=1)]

    log_in(page, base, "rita", PASSWORD)
    page.goto(f"{base}/#/runs/{run_id}")
    page.wait_for_selector("#deployment-card:not([hidden]) #deploy-run:not([hidden])")
    assert page.inner_text("#deployment-meta") == "Not served."
    assert page.is_hidden("#predict-form") and page.is_hidden("#stop-deployment")
    page.click("#deploy-run")
    page.wait_for_selector("#deployment-status[data-status=running]", timeout=120_000)
    assert page.is_hidden("#deploy-run") and page.is_visible("#stop-deployment")
    name = f"run-{run_id}"
    assert page.inner_text("#deployment-meta").startswith(f"{name} · 1 replica · ")
    assert predict_in_form(page, rows) == expected
    shots = os.environ.get("REDFL_SCREENSHOTS")
    if shots:
        page.screenshot(path=str(Path(shots) / "deployment.png"), full_page=True)
    page.fill("#predict-inputs", "1 2 3")
    page.click("#predict-form button[type=submit]")
    page.wait_for_selector(
        "#notice:not([hidden]):text('body.inputs.0: a row must hold 64 numbers')"
    )
    assert page.is_hidden("#predict-output")

    viewer = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        log_in(viewer, base, "vic", PASSWORD)
        viewer.goto(f"{base}/#/runs/{run_id}")
        viewer.wait_for_selector("#deployment-status[data-status=running]")
        assert viewer.is_hidden("#deploy-run") and viewer.is_hidden("#stop-deployment")
        assert predict_in_form(viewer, rows[:1]) == expected[:1]
    finally:
        viewer.close()

    page.click("#stop-deployment")
    page.wait_for_selector("#deployment-meta:text('Not served.')")
    assert page.is_visible("#deploy-run") and page.is_hidden("#predict-form")
    wait_for(lambda: name not in deployment_states(), 30, f"{name} to leave Ray Serve")
