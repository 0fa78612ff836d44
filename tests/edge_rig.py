"""An edge deployment in one background thread: server, relays, LCPs and proxy as uvicorn
servers over TLS, each with its credential from a folder ``redfl tree`` provisioned."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from redfl.edge.fleet import DeviceRegister, EnrollmentConfig, Fleet
from redfl.edge.job import EdgeJob
from redfl.edge.jobs import JobSpec
from redfl.edge.lcp import LcpService
from redfl.edge.lcp_app import lcp_app
from redfl.edge.provision import Member
from redfl.edge.proxy import proxy_app
from redfl.edge.relay import relay_app
from redfl.edge.serve import proxy_tls as public_tls
from redfl.edge.serve import server_config
from redfl.edge.server import EdgeServer, server_app
from redfl.edge.tokens import TokenSigner
from redfl.provision.folder import write_folder
from redfl.topology.tree import relay_tree
from redfl.topology.tree_file import TreeFile
from redfl.trust.operator import OPERATOR_HEADER, operator_token

SECRET = "enrol-me-please"
NUMERIC = "redfl.examples.edge:NumericDevice"
"""The device class whose update is a vector of ones."""
TREE = relay_tree(1, 2, 2)
"""lcp-1-1, lcp-1-2 under relay-1; lcp-2-1, lcp-2-2 under relay-2."""


def provision(folder: Path) -> Path:
    """Write the provisioning folder of :data:`TREE` (everything on 127.0.0.1) at ``folder``."""
    write_folder(folder, TreeFile("edge-test", 9000, TREE))
    return folder


def dev_fleet(folder: Path, signer: TokenSigner | None = None) -> Fleet:
    """A development-mode fleet: anyone with :data:`SECRET` enrols as any id."""
    register = DeviceRegister(folder / "devices.jsonl")
    config = EnrollmentConfig(mode="shared-secret")
    return Fleet(signer or TokenSigner(b"k" * 32), register, config, SECRET)


def wait_until(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.02)


def _listening(port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:``port`` (0: a free one), for a server to take."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


class ThreadedDeployment:
    """Server + LCPs (+ their relays) + proxy on 127.0.0.1, served from one event loop in a
    thread, every internal hop mutual TLS with the folder's credentials.

    Parameters
    ----------
    spec : JobSpec
        The job, submitted at start (``job``; the server's jobs go to ``folder/jobs-<port>``).
    lcps : list[str]
        LCPs of :data:`TREE` to run.
    folder : Path
        A folder :func:`provision` wrote.
    fleet : Fleet | None
        The proxy's fleet (default: :func:`dev_fleet`).
    relays : bool
        Whether LCPs sync through their relays (else straight to the server).
    proxy_tls : bool
        Whether the proxy's port speaks TLS (the tree's proxy certificate).
    """

    def __init__(
        self,
        spec: JobSpec,
        lcps: list[str],
        folder: Path,
        fleet: Fleet | None = None,
        relays: bool = False,
        proxy_tls: bool = False,
    ) -> None:
        self.spec, self.folder, self.lcps = spec, folder, lcps
        self.fleet = fleet or dev_fleet(folder)
        used = sorted({TREE.site(lcp).relay or "" for lcp in lcps}) if relays else []
        # each port is held by a listening socket from here on, which its server then takes:
        # a port merely found free could be taken meanwhile (by a client's own end, say)
        self.sockets = {name: _listening(0) for name in ["server", "proxy", *used, *lcps]}
        self.ports = {name: sock.getsockname()[1] for name, sock in self.sockets.items()}
        self.url = {name: f"https://127.0.0.1:{port}" for name, port in self.ports.items()}
        if not proxy_tls:
            self.url["proxy"] = f"http://127.0.0.1:{self.ports['proxy']}"
        self.member = {
            n: Member.load(folder, n) for n in ["server", "proxy", "operator", *used, *lcps]
        }
        self.upstream = {
            lcp: self.url[TREE.site(lcp).relay or ""] if relays else self.url["server"]
            for lcp in lcps
        }
        self.servers: dict[str, uvicorn.Server] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.services: dict[str, LcpService] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = EdgeServer(folder / f"jobs-{self.ports['server']}")
        self.job: EdgeJob = self.server.submit(spec)
        app = self.server_app = server_app(self.server, TREE, self.member["server"])
        self._serve("server", app, self.member["server"].server_tls())
        for relay in used:
            member = self.member[relay]
            self._serve(
                relay, relay_app(relay, TREE, self.url["server"], member), member.server_tls()
            )
        for name in lcps:
            self.start_lcp(name)
        lcp_urls = {name: self.url[name] for name in lcps}
        proxy = self.member["proxy"]
        self.proxy = proxy_app(lcp_urls, self.fleet, proxy, health_interval=0.1)
        self._serve("proxy", self.proxy, public_tls(proxy, proxy_tls))
        wait_until(lambda: all(s.started for s in self.servers.values()), what="servers started")
        wait_until(lambda: all(self.proxy.state.router.up.values()), what="LCPs healthy")

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def _serve(self, name: str, app: Any, tls: ssl.SSLContext | None) -> None:
        server = uvicorn.Server(server_config(app, "127.0.0.1", self.ports[name], tls))
        self.servers[name] = server

        sock = self.sockets[name]
        if sock.fileno() == -1:  # closed by the server that served it before: the same port
            sock = self.sockets[name] = _listening(self.ports[name])

        async def start() -> None:
            self.tasks[name] = asyncio.create_task(server.serve(sockets=[sock]))

        self._call(start())

    def start_lcp(self, name: str) -> None:
        member = self.member[name]
        service = LcpService(name, self.upstream[name], member, sync_interval=0.02)
        self.services[name] = service
        self._serve(name, lcp_app(service), member.server_tls())
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

    def client(self, member: str | None = None) -> httpx.Client:
        """An HTTP client that trusts the tree's CA, presenting ``member``'s certificate."""
        tls = (self.member[member] if member else self.member["operator"]).client_tls()
        if member is None:
            tls = ssl.create_default_context(cadata=self.member["proxy"].bundle.ca_pem)
        return httpx.Client(verify=tls, timeout=10.0)

    def operator(self) -> dict[str, str]:
        """Headers with an operator token."""
        return {OPERATOR_HEADER: operator_token(self.member["operator"].bundle)}

    def token(self, device: str) -> dict[str, str]:
        with self.client() as client:
            reply = client.post(
                f"{self.url['proxy']}/enroll", json={"device_id": device, "secret": SECRET}
            )
        return {"authorization": f"Bearer {reply.json()['token']}"}
