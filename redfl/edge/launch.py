"""Start an edge deployment as local processes, supervised: the server, one LCP per entry of
``lcp_map.json`` (with the tree's relays between them and the server, if asked), and the
routing proxy; wait for their health; restart any that dies (:mod:`redfl.edge.supervisor`);
stop them by pid.

Every process takes its credential from the provisioning folder (``redfl tree`` writes it);
the health checks and :meth:`EdgeProcesses.get` speak as the folder's operator, and so do
:meth:`EdgeProcesses.submit` and the other job commands (:mod:`redfl.edge.control`). Used by
``redfl edge up``, the end-to-end tests and ``bench/edge.py``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from redfl.edge.control import ControlError, Operator
from redfl.edge.provision import read_lcp_map
from redfl.edge.supervisor import Supervisor
from redfl.topology.tree_file import load_tree

__all__ = ["EdgeProcesses"]


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "redfl.edge.cli", *args]


class EdgeProcesses:
    """The processes of one edge deployment on this host.

    Parameters
    ----------
    tree_dir : Path
        A provisioning folder (``redfl tree``): ``lcp_map.json``, ``credentials/``, the
        trust home (and ``edge_secrets.json``, created when missing).
    job_file : Path | None
        A job (JSON, :class:`redfl.edge.jobs.JobSpec`) the server submits when it starts,
        unless it holds a job of that name already.
    proxy_port, server_port : int
        Ports of the proxy and the server (LCP ports come from ``lcp_map.json``).
    host : str, default "127.0.0.1"
        Interface every process binds.
    proxy_tls : bool, default False
        Serve the proxy's port with TLS (the tree's proxy certificate), else plain HTTP.
    jobs_dir : Path | None
        The server's jobs folder (default ``tree_dir/jobs``).
    relays : bool, default False
        Start the tree's relays and let each LCP sync through its relay (they aggregate when
        the tree has aggregators); else LCPs reach the server directly.
    relay_ports : dict[str, int] | None
        Ports of the relays (default: the tree's).
    supervisor : Supervisor | None
        Restarts what dies (default: 5 restarts a minute per process, logged on stderr).
    server_args : Sequence[str]
        More options of ``redfl edge server`` (``--fsync``, ``--allow-import ...``).

    Raises
    ------
    ValueError
        If the folder's ``lcp_map.json``, tree or operator credential is missing or
        malformed.
    """

    def __init__(
        self,
        tree_dir: Path,
        job_file: Path | None,
        proxy_port: int,
        server_port: int,
        host: str = "127.0.0.1",
        proxy_tls: bool = False,
        jobs_dir: Path | None = None,
        relays: bool = False,
        relay_ports: dict[str, int] | None = None,
        supervisor: Supervisor | None = None,
        server_args: Sequence[str] = (),
    ) -> None:
        self.tree_dir, self.host = Path(tree_dir), host
        self.job_file = None if job_file is None else Path(job_file)
        self.jobs_dir = Path(jobs_dir) if jobs_dir is not None else self.tree_dir / "jobs"
        self.lcps = read_lcp_map(self.tree_dir)
        self.tree = load_tree(self.tree_dir).tree
        self.operator = Operator.of_tree(self.tree_dir)
        self.tls = self.operator.member.client_tls()
        self.server_url = f"https://{host}:{server_port}"
        self.proxy_url = f"{'https' if proxy_tls else 'http'}://{host}:{proxy_port}"
        self.proxy_port, self.server_port, self.proxy_tls = proxy_port, server_port, proxy_tls
        self.relays: dict[str, int] = {}
        if relays:
            used = {r for lcp in self.lcps for r in self.tree.relay_path(lcp)}
            ports = relay_ports or {}
            self.relays = {r: ports.get(r, self.tree.site(r).port) for r in sorted(used)}
        self.supervisor = supervisor or Supervisor()
        self.server_args = list(server_args)
        self._watching = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def procs(self) -> dict[str, Any]:
        """The processes by name (``server``, ``proxy``, each LCP and relay)."""
        return {name: child.proc for name, child in self.supervisor.children.items()}

    def url_of(self, name: str) -> str:
        """The URL of a relay, or of the server."""
        return self.server_url if name == "server" else f"https://{self.host}:{self.relays[name]}"

    def upstream(self, site: str) -> str:
        """Where an LCP or relay syncs: the next relay up, else the server."""
        if not self.relays:
            return self.server_url
        path = self.tree.relay_path(site)
        up = path[0] if self.tree.site(site).kind == "lcp" else (path[1:] or ("server",))[0]
        return self.url_of(up)

    def start_lcp(self, name: str) -> None:
        """Start (or restart) the LCP ``name``."""
        address = self.lcps[name]
        self.supervisor.start(
            name,
            _command(
                "lcp",
                "--tree",
                str(self.tree_dir),
                "--name",
                name,
                "--server",
                self.upstream(name),
                "--host",
                address.host,
                "--port",
                str(address.port),
            ),
        )

    def start(self, timeout: float = 60.0, watch: bool = True) -> None:
        """Start everything, wait until every process is healthy, then (with ``watch``)
        watch them, restarting what dies, from a background thread (else the caller polls
        :attr:`supervisor`).

        Raises
        ------
        RuntimeError
            When a process is not healthy within ``timeout`` (everything is stopped).
        """
        job = ["--job", str(self.job_file)] if self.job_file is not None else []
        self.supervisor.start(
            "server",
            _command(
                "server",
                "--tree",
                str(self.tree_dir),
                "--jobs",
                str(self.jobs_dir),
                *job,
                "--host",
                self.host,
                "--port",
                str(self.server_port),
                *self.server_args,
            ),
        )
        for relay, port in self.relays.items():
            self.supervisor.start(
                relay,
                _command(
                    "relay",
                    "--tree",
                    str(self.tree_dir),
                    "--name",
                    relay,
                    "--upstream",
                    self.upstream(relay),
                    "--host",
                    self.host,
                    "--port",
                    str(port),
                ),
            )
        for name in self.lcps:
            self.start_lcp(name)
        tls = ["--tls"] if self.proxy_tls else []
        self.supervisor.start(
            "proxy",
            _command(
                "proxy",
                "--tree",
                str(self.tree_dir),
                "--host",
                self.host,
                "--port",
                str(self.proxy_port),
                *tls,
            ),
        )
        urls = [
            self.server_url,
            self.proxy_url,
            *(self.url_of(r) for r in self.relays),
            *(a.url for a in self.lcps.values()),
        ]
        try:
            self.wait_healthy(urls, timeout)
        except BaseException:
            self.stop()
            raise
        if watch:
            self.watch()

    def watch(self, interval: float = 0.2) -> None:
        """Restart what dies, from a background thread, until :meth:`stop`."""
        self._watching.set()

        def loop() -> None:
            while self._watching.is_set():
                self.supervisor.poll()
                time.sleep(interval)

        self._watcher = threading.Thread(target=loop, name="edge-supervisor", daemon=True)
        self._watcher.start()

    def wait_healthy(self, urls: list[str], timeout: float) -> None:
        """Wait until ``GET url/health`` answers 200 (and, for LCPs and relays, synced) for
        every URL.

        Raises
        ------
        RuntimeError
            When a process exited or the deadline passed.
        """
        deadline = time.monotonic() + timeout
        pending = list(urls)
        while pending:
            for key, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"edge process {key!r} exited with {proc.returncode}")
            url = pending[0]
            try:
                reply = httpx.get(f"{url}/health", timeout=1.0, verify=self.tls)
                if reply.status_code == 200 and reply.json().get("synced", True):
                    pending.pop(0)
                    continue
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not healthy within {timeout} s")
            time.sleep(0.05)

    def get(self, url: str, **params: object) -> dict[str, Any]:
        """``GET url`` as the folder's operator; the JSON reply.

        Raises
        ------
        ControlError
            When the service cannot be reached or answers with an error.
        """
        return self.operator.get(url, **params)

    def submit(self, job_file: Path) -> dict[str, Any]:
        """Submit a job file to the server as the operator; the job's summary."""
        return self.operator.submit(self.server_url, job_file)

    def job(self, job_id: str, ids: bool = False) -> dict[str, Any]:
        """One job's status (with its folded task ids when ``ids``)."""
        return self.get(f"{self.server_url}/jobs/{job_id}", ids=ids)

    def wait_job(
        self, job_id: str, timeout: float, until: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """Poll a job's status until ``until`` holds (default: it ended); the last status.

        Raises
        ------
        TimeoutError
            When it does not within ``timeout`` seconds.
        """
        check = until or (lambda status: status["status"] != "running")
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self.job(job_id)
                if check(status):
                    return status
            except ControlError:
                pass  # the server is being restarted
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id}: not there within {timeout} s")
            time.sleep(0.1)

    def kill(self, key: str) -> None:
        """Kill one process (an LCP or relay name, ``server`` or ``proxy``) by its pid; the
        supervisor starts it again."""
        self.supervisor.kill(key)

    def pids(self) -> list[int]:
        """Process ids of the running processes."""
        return self.supervisor.pids()

    def stop(self) -> None:
        """Stop watching, then terminate every process (kill after 5 s)."""
        self._watching.clear()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        self.supervisor.stop()
