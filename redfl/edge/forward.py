"""A lean HTTP/1.1 client for the proxy -> LCP hop: kept-alive asyncio streams.

The proxy forwards every device request to an LCP, so this hop is on the hot path; a
general client (httpx) spends several times more CPU per request than the proxy's own work.
LCPs are our own uvicorn servers on the loopback, answering with ``Content-Length`` bodies,
which is all this client handles. A reused connection that fails (the LCP closed an idle
keep-alive) is retried once on a fresh one; forwarded requests are idempotent (a result is
de-duplicated by task id), so the retry is safe.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["ForwardError", "LcpConnections", "Poster"]

_MAX_HEAD = 64 * 1024


class ForwardError(ConnectionError):
    """The LCP could not be reached or answered with something that is not HTTP/1.1."""


class Poster(Protocol):
    """Anything that POSTs bytes and returns ``(status, body)``, like :class:`LcpConnections`."""

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST ``body`` to ``path``."""
        ...


class LcpConnections:
    """A pool of kept-alive connections to one LCP.

    Parameters
    ----------
    host, port : str, int
        Where the LCP listens.
    max_idle : int, default 128
        Idle connections kept for reuse.
    timeout : float, default 30.0
        Seconds an exchange may take before the LCP counts as unreachable.
    """

    def __init__(self, host: str, port: int, max_idle: int = 128, timeout: float = 30.0) -> None:
        self.host, self.port, self.max_idle, self.timeout = host, port, max_idle, timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST ``body`` to ``path``; return the status code and the response body.

        Raises
        ------
        ForwardError
            When the LCP cannot be reached or the exchange fails.
        """
        lines = [f"POST {path} HTTP/1.1", f"host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"content-length: {len(body)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        while self._idle:
            stream = self._idle.pop()
            try:
                return await self._exchange(stream, request)
            except ForwardError:
                continue  # a stale keep-alive connection: try another, then a fresh one
        try:
            stream = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise ForwardError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        return await self._exchange(stream, request)

    async def _exchange(
        self, stream: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes
    ) -> tuple[int, bytes]:
        reader, writer = stream
        try:
            async with asyncio.timeout(self.timeout):
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status, length, keep = _parse_head(head)
                body = await reader.readexactly(length)
        except (OSError, EOFError, asyncio.LimitOverrunError, ValueError, TimeoutError) as exc:
            writer.close()
            raise ForwardError(f"exchange with {self.host}:{self.port} failed: {exc!r}") from None
        if keep and len(self._idle) < self.max_idle:
            self._idle.append(stream)
        else:
            writer.close()
        return status, body

    def close(self) -> None:
        """Close the idle connections."""
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """Status code, content length and keep-alive of a response head."""
    if len(head) > _MAX_HEAD:
        raise ValueError("response head too large")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    length, keep = -1, True
    for line in header_lines:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            keep = False
    if length < 0:
        raise ValueError("response without content-length")
    return status, length, keep
