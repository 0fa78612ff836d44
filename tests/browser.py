"""Browser-test helpers: Debian's Chromium driven by Playwright, and an app served by
uvicorn in a thread of the test process.

Playwright never downloads a browser here: it drives ``/usr/bin/chromium`` (Debian's
``chromium`` package, installed by ``scripts/system-packages.sh``). Without it the tests fail
with one line naming the package.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Headless Chromium on a machine with a closed network (Playwright adds ``--headless`` and
a new empty profile folder of its own)."""


def wait_for(condition: Callable[[], Any], timeout: float, what: str | Callable[[], str]) -> Any:
    """Poll ``condition`` until it returns a true value; fail naming ``what`` (or what it
    returns then) at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            said = what if isinstance(what, str) else what()
            pytest.fail(f"timed out after {timeout:g} s waiting for {said}", pytrace=False)
        time.sleep(0.05)


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Debian Chromium under Playwright (fails when the package is missing)."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: install the Debian package chromium (apt-get install -y "
            "chromium; scripts/system-packages.sh does it)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(name="browser", scope="module")
def browser_fixture() -> Iterator[Browser]:
    """One :func:`chromium` for the test module."""
    with chromium() as launched:
        yield launched


@pytest.fixture(name="page")
def page_fixture(browser: Browser) -> Iterator[Page]:
    """A page of a new 1200x900 context (downloads accepted); the test fails if the page
    had a script error or a CSP violation."""
    context = browser.new_context(viewport={"width": 1200, "height": 900}, accept_downloads=True)
    opened = context.new_page()
    errors = PageErrors(opened)
    yield opened
    context.close()
    assert errors.messages == []  # no script error, no CSP violation


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port; yields the base URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


class PageErrors:
    """Console errors and uncaught exceptions of a page (a CSP violation is a console error).

    Chromium's "Failed to load resource" lines for HTTP error statuses are left out: the
    tests check the statuses they provoke themselves.
    """

    def __init__(self, page: Page) -> None:
        self.messages: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.messages.append(str(e)))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.messages.append(message.text)


def log_in(page: Page, base: str, name: str, password: str) -> None:
    """Open the dashboard and log in as ``name``; waits for the runs list."""
    page.goto(base + "/")
    page.fill("#login-form input[name=username]", name)
    page.fill("#login-form input[name=password]", password)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#runs-view:not([hidden])")
    page.wait_for_selector(f"#whoami:text('{name}')")
