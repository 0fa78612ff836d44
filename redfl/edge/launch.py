"""Start an edge deployment as local processes: the server, one LCP per entry of
``lcp_map.json``, and the routing proxy; wait for their health; stop them by pid.

Every process takes its credential from the provisioning folder (``redfl tree`` writes it);
the health checks and :meth:`EdgeProcesses.get` speak as the folder's operator. Used by
``redfl edge up``, the end-to-end test and ``bench/edge.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from redfl.edge.peers import operator_token
from redfl.edge.provision import Member, read_lcp_map
from redfl.edge.routes import OPERATOR_HEADER

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
    job_file : Path
        The job's JSON file (:class:`redfl.edge.jobs.JobSpec`).
    proxy_port, server_port : int
        Ports of the proxy and the server (LCP ports come from ``lcp_map.json``).
    host : str, default "127.0.0.1"
        Interface every process binds.
    proxy_tls : bool, default False
        Serve the proxy's port with TLS (the tree's proxy certificate), else plain HTTP.

    Raises
    ------
    ValueError
        If the folder's ``lcp_map.json`` or operator credential is missing or malformed.
    """

    def __init__(
        self,
        tree_dir: Path,
        job_file: Path,
        proxy_port: int,
        server_port: int,
        host: str = "127.0.0.1",
        proxy_tls: bool = False,
    ) -> None:
        self.tree_dir, self.job_file, self.host = Path(tree_dir), Path(job_file), host
        self.lcps = read_lcp_map(self.tree_dir)
        self.operator = Member.load(self.tree_dir, "operator")
        self.tls = self.operator.client_tls()
        self.server_url = f"https://{host}:{server_port}"
        self.proxy_url = f"{'https' if proxy_tls else 'http'}://{host}:{proxy_port}"
        self.proxy_port, self.server_port, self.proxy_tls = proxy_port, server_port, proxy_tls
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, key: str, *args: str) -> None:
        self.procs[key] = subprocess.Popen(_command(*args), stdin=subprocess.DEVNULL)

    def start_lcp(self, name: str) -> None:
        """Start (or restart) the LCP ``name``."""
        address = self.lcps[name]
        self._spawn(
            name, "lcp", "--tree", str(self.tree_dir), "--name", name,
            "--server", self.server_url, "--host", address.host, "--port", str(address.port),
        )  # fmt: skip

    def start(self, timeout: float = 60.0) -> None:
        """Start everything and wait until every process is healthy."""
        self._spawn(
            "server", "server", "--tree", str(self.tree_dir), "--job", str(self.job_file),
            "--host", self.host, "--port", str(self.server_port),
        )  # fmt: skip
        for name in self.lcps:
            self.start_lcp(name)
        tls = ["--tls"] if self.proxy_tls else []
        self._spawn(
            "proxy", "proxy", "--tree", str(self.tree_dir),
            "--host", self.host, "--port", str(self.proxy_port), *tls,
        )  # fmt: skip
        urls = [self.server_url, self.proxy_url, *(a.url for a in self.lcps.values())]
        try:
            self.wait_healthy(urls, timeout)
        except BaseException:
            self.stop()
            raise

    def wait_healthy(self, urls: list[str], timeout: float) -> None:
        """Wait until ``GET url/health`` answers 200 (and, for LCPs, synced) for every URL.

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
        """``GET url`` as the folder's operator (its certificate, and an operator token for a
        proxy on plain HTTP); the JSON reply.

        Raises
        ------
        httpx.HTTPStatusError
            For a reply that is not 2xx.
        """
        headers = {OPERATOR_HEADER: operator_token(self.operator.bundle)}
        query = {k: str(v) for k, v in params.items()}
        reply = httpx.get(url, params=query, headers=headers, timeout=10.0, verify=self.tls)
        reply.raise_for_status()
        return dict(reply.json())

    def kill(self, key: str) -> None:
        """Kill one process (an LCP name, ``server`` or ``proxy``) and reap it."""
        proc = self.procs.pop(key)
        proc.kill()
        proc.wait(timeout=10)

    def pids(self) -> list[int]:
        """Process ids of the running processes."""
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def stop(self) -> None:
        """Terminate every process (kill after 5 s)."""
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()
