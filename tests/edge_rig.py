"""An edge deployment in one background thread: server, LCPs and proxy as uvicorn servers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import uvicorn
from waiting import free_port

from redfl.edge.jobs import JobSpec
from redfl.edge.lcp import LcpService
from redfl.edge.lcp_app import lcp_app
from redfl.edge.proxy import proxy_app
from redfl.edge.server import EdgeServer, server_app
from redfl.edge.tokens import TokenSigner

SECRET = "enrol-me-please"


def wait_until(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.02)


class ThreadedDeployment:
    """Server + LCPs + proxy on 127.0.0.1, served from one event loop in a thread."""

    def __init__(self, spec: JobSpec, lcps: list[str], signer: TokenSigner | None = None) -> None:
        self.spec = spec
        self.signer = signer or TokenSigner(b"k" * 32)
        self.ports = {name: free_port() for name in ["server", "proxy", *lcps]}
        self.lcps = lcps
        self.url = {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}
        self.servers: dict[str, uvicorn.Server] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        app = server_app(spec)
        self.server: EdgeServer = app.state.server
        self._serve("server", app)
        for name in lcps:
            self.start_lcp(name)
        lcp_urls = {name: self.url[name] for name in lcps}
        self.proxy = proxy_app(lcp_urls, self.signer, SECRET, health_interval=0.1)
        self._serve("proxy", self.proxy)
        wait_until(lambda: all(s.started for s in self.servers.values()), what="servers started")
        wait_until(lambda: all(self.proxy.state.router.up.values()), what="LCPs healthy")

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def _serve(self, name: str, app: Any) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.ports[name], log_level="warning", ws="none"
        )
        server = uvicorn.Server(config)
        self.servers[name] = server

        async def start() -> None:
            self.tasks[name] = asyncio.create_task(server.serve())

        self._call(start())

    def start_lcp(self, name: str) -> None:
        service = LcpService(name, self.url["server"], sync_interval=0.02)
        self._serve(name, lcp_app(service))
        wait_until(lambda: self.servers[name].started, what=f"{name} started")

    def stop(self, name: str) -> None:
        self.servers[name].should_exit = True
        wait_until(lambda: self.tasks[name].done(), what=f"{name} stopped")

    def close(self) -> None:
        for name in list(self.servers):
            self.servers[name].should_exit = True
        wait_until(lambda: all(t.done() for t in self.tasks.values()), what="all stopped")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def token(self, device: str) -> dict[str, str]:
        reply = httpx.post(
            f"{self.url['proxy']}/enroll", json={"device_id": device, "secret": SECRET}
        )
        return {"authorization": f"Bearer {reply.json()['token']}"}
