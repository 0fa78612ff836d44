"""Start an edge deployment as local processes: the server, one LCP per entry of
``lcp_map.json``, and the routing proxy; wait for their health; stop them by pid.

Used by ``redfl edge up``, the end-to-end test and ``bench/edge.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from redfl.edge.provision import read_lcp_map

__all__ = ["EdgeProcesses"]


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "redfl.edge.cli", *args]


class EdgeProcesses:
    """The processes of one edge deployment on this host.

    Parameters
    ----------
    tree_dir : Path
        Folder with ``lcp_map.json`` (and ``edge_secrets.json``, created when missing).
    job_file : Path
        The job's JSON file (:class:`redfl.edge.jobs.JobSpec`).
    proxy_port, server_port : int
        Ports of the proxy and the server (LCP ports come from ``lcp_map.json``).
    host : str, default "127.0.0.1"
        Interface every process binds.
    """

    def __init__(
        self, tree_dir: Path, job_file: Path, proxy_port: int, server_port: int,
        host: str = "127.0.0.1",
    ) -> None:  # fmt: skip
        self.tree_dir, self.job_file, self.host = Path(tree_dir), Path(job_file), host
        self.lcps = read_lcp_map(self.tree_dir)
        self.server_url = f"http://{host}:{server_port}"
        self.proxy_url = f"http://{host}:{proxy_port}"
        self.proxy_port, self.server_port = proxy_port, server_port
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, key: str, *args: str) -> None:
        self.procs[key] = subprocess.Popen(_command(*args), stdin=subprocess.DEVNULL)

    def start_lcp(self, name: str) -> None:
        """Start (or restart) the LCP ``name``."""
        address = self.lcps[name]
        self._spawn(
            name, "lcp", "--name", name, "--server", self.server_url,
            "--host", address.host, "--port", str(address.port),
        )  # fmt: skip

    def start(self, timeout: float = 60.0) -> None:
        """Start everything and wait until every process is healthy."""
        self._spawn(
            "server", "server", "--job", str(self.job_file),
            "--host", self.host, "--port", str(self.server_port),
        )  # fmt: skip
        for name in self.lcps:
            self.start_lcp(name)
        self._spawn(
            "proxy", "proxy", "--tree", str(self.tree_dir),
            "--host", self.host, "--port", str(self.proxy_port),
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
                reply = httpx.get(f"{url}/health", timeout=1.0)
                if reply.status_code == 200 and reply.json().get("synced", True):
                    pending.pop(0)
                    continue
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not healthy within {timeout} s")
            time.sleep(0.05)

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
