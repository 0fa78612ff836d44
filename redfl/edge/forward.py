"""A lean HTTP/1.1 client for the hops between edge components: kept-alive asyncio streams,
over mutually authenticated TLS.

The proxy forwards every device request to an LCP, so this hop is on the hot path; a
general client (httpx) spends several times more CPU per request than the proxy's own work.
The peers are our own uvicorn servers, answering with ``Content-Length`` bodies, which is all
this client handles. With an ``ssl`` context (:func:`redfl.trust.client_context` of the
caller's bundle) every new connection presents the caller's certificate and checks the
service's certificate and host name in the handshake, then ``expect`` checks the member it
reached (an LCP of that name, the server): once per connection, so kept-alive requests cost
only the TLS record layer. A reused connection that fails (the peer closed an idle
keep-alive) is retried once on a fresh one; forwarded requests are idempotent (a result is
de-duplicated by task id), so the retry is safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from ssl import SSLContext
from typing import Protocol

from redfl.trust import UntrustedError

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
    ssl : ssl.SSLContext | None, default None
        TLS for every connection (None: plain HTTP, e.g. to a proxy without TLS).
    expect : Callable[[bytes | None], None] | None, default None
        Checks the peer's certificate (DER) of each new TLS connection, raising when it is
        not the member expected (:meth:`redfl.edge.peers.Peers.acceptor`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        max_idle: int = 128,
        timeout: float = 30.0,
        ssl: SSLContext | None = None,
        expect: Callable[[bytes | None], None] | None = None,
    ) -> None:
        self.host, self.port, self.max_idle, self.timeout = host, port, max_idle, timeout
        self.ssl, self.expect = ssl, expect
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
        return await self._exchange(await self._connect(), request)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A fresh connection (TLS handshake and peer check included)."""
        where = f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl is not None else None,
                )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            raise ForwardError(f"cannot connect to {where}: {exc}") from None
        if self.ssl is not None and self.expect is not None:
            tls = writer.get_extra_info("ssl_object")
            try:
                self.expect(tls.getpeercert(binary_form=True) if tls is not None else None)
            except UntrustedError as exc:
                writer.close()
                raise ForwardError(f"{where} is not the member expected: {exc.reason}") from None
        return reader, writer

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
