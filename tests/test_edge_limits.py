"""Limits against abuse at a real routing proxy process: the caller is identified before a
byte of the body is read, and a body over the route's cap gets 413 before it is buffered, so
the proxy's memory stays flat under a 300 MB body (authenticated or not, declared or
chunked)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from edge_rig import provision
from waiting import free_port, wait_until

from redfl.edge.fleet import Fleet

BODY = 300 * 1024 * 1024
CHUNK = b"x" * (1024 * 1024)


class Proxy:
    """A ``redfl edge proxy`` process (its LCP is down: nothing here is forwarded)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "redfl.edge.cli", "proxy", "--tree", str(folder)]
        self.process = subprocess.Popen([*command, "--port", str(self.port)])
        self.url = f"http://127.0.0.1:{self.port}"
        assert wait_until(self.healthy, 60), "the proxy did not start"
        self.peak = 0.0
        self._stop = threading.Event()

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def rss_mb(self) -> float:
        return float(psutil.Process(self.process.pid).memory_info().rss / 2**20)

    def watch(self) -> threading.Thread:
        """Sample the RSS every 10 ms until :meth:`done` (the peak is kept)."""
        self.peak = self.rss_mb()
        self._stop.clear()

        def sample() -> None:
            while not self._stop.wait(0.01):
                self.peak = max(self.peak, self.rss_mb())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        return thread

    def done(self, thread: threading.Thread) -> float:
        self._stop.set()
        thread.join()
        return self.peak

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, str]]:
    folder = provision(tmp_path_factory.mktemp("tree"))
    (folder / "lcp_map.json").write_text(json.dumps({"lcp-1-1": {"host": "127.0.0.1", "port": 1}}))
    token = Fleet.of_tree(folder).issue(["attacker"])["attacker"]
    running = Proxy(folder)
    yield running, token
    running.stop()


def send(port: int, head: str, body: Iterator[bytes]) -> tuple[bytes, int]:
    """Send ``head`` then ``body`` (until the proxy hangs up); the reply and the bytes sent."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode("latin-1"))
        try:
            for chunk in body:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the proxy answered and closed: the rest was never read
        reply = b""
        try:
            while not reply.endswith(b"}"):  # every refusal's body is one JSON object
                data = sock.recv(65536)
                if not data:
                    break
                reply += data
        except ConnectionResetError:
            pass
    return reply, sent


def declared(path: str, headers: str) -> str:
    return f"POST {path} HTTP/1.1\r\nhost: proxy\r\n{headers}content-length: {BODY}\r\n\r\n"


def chunks(total: int) -> Iterator[bytes]:
    for _ in range(total // len(CHUNK)):
        yield CHUNK


def chunked(total: int) -> Iterator[bytes]:
    for _ in range(total // len(CHUNK)):
        yield f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n"


@pytest.mark.parametrize(
    ("case", "status"),
    [("unauthenticated, declared", 401), ("authenticated, declared", 413)],
)
def test_a_300_mb_body_is_refused_before_it_is_read(
    proxy: tuple[Proxy, str], case: str, status: int
) -> None:
    running, token = proxy
    auth = f"authorization: Bearer {token}\r\n" if case.startswith("authenticated") else ""
    before = running.rss_mb()
    watcher = running.watch()
    reply, sent = send(running.port, declared("/result", auth), chunks(BODY))
    peak = running.done(watcher)
    assert reply.startswith(f"HTTP/1.1 {status} ".encode()), reply[:200]
    assert b"connection: close" in reply.lower()
    assert peak - before < 20, f"RSS {before:.0f} -> peak {peak:.0f} MB"
    assert sent < BODY  # the proxy hung up instead of taking it all
    assert running.healthy()


def test_a_chunked_body_over_the_cap_is_cut_off_at_the_cap(proxy: tuple[Proxy, str]) -> None:
    running, token = proxy
    head = (
        "POST /task HTTP/1.1\r\nhost: proxy\r\n"
        f"authorization: Bearer {token}\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    before = running.rss_mb()
    watcher = running.watch()
    reply, sent = send(running.port, head, chunked(BODY))
    peak = running.done(watcher)
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1]) == {
        "status": "INVALID_REQUEST",
        "reason": "body too large: /task takes at most 65,536 bytes",
    }
    assert peak - before < 20, f"RSS {before:.0f} -> peak {peak:.0f} MB"
    assert sent < BODY


def test_a_small_body_over_the_cap_gets_413_with_the_reason(proxy: tuple[Proxy, str]) -> None:
    running, token = proxy
    headers = {"authorization": f"Bearer {token}"}
    reply = httpx.post(f"{running.url}/job", content=b"{" + b" " * 70_000 + b"}", headers=headers)
    assert reply.status_code == 413
    assert reply.json() == {
        "status": "INVALID_REQUEST",
        "reason": "body too large: /job takes at most 65,536 bytes",
    }
