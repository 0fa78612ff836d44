"""uvicorn serving the sites' app over mutual TLS, in a thread of its own.

The TLS handshake is done in the connection's protocol, not by the listening socket: each
connection starts as plain TCP, :class:`TlsFirst` upgrades it with ``loop.start_tls`` and
only then hands it to uvicorn's HTTP protocol. So a refused handshake (no certificate, one
from another CA, an expired one) is caught here and logged with its reason and the peer's
address, which a listening TLS socket would drop silently; and the peer's certificate goes
into every request's scope (``scope["extensions"]["tls"]["client_cert_der"]``) for the app
to verify, with the connection's number (``["connection"]``), which the app is told again
when the connection closes (``closed``), so that it knows a site's connection is gone even
when no request was open on it. A handshake has :data:`HANDSHAKE_TIMEOUT_S` seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from redfl.runtime.sites.service import Receive, Scope, Send, SiteService

LOG = logging.getLogger("redfl.sites")

HANDSHAKE_TIMEOUT_S = 10.0
"""How long a TLS handshake may take."""
START_TIMEOUT_S = 10.0
"""How long the server may take to start serving."""
STOP_TIMEOUT_S = 5.0
"""How long the server may take to stop."""


class _WithPeer:
    """The app, with the peer's certificate (DER) and the connection's number in each
    request's scope."""

    def __init__(self, app: Any, der: bytes, number: int) -> None:
        self.app = app
        self.der = der
        self.number = number

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions = dict(scope.get("extensions") or {})
        extensions["tls"] = {"client_cert_der": self.der, "connection": self.number}
        await self.app({**scope, "extensions": extensions}, receive, send)


class TlsFirst(asyncio.Protocol):
    """A connection's protocol: the TLS handshake, then uvicorn's HTTP protocol behind it.

    Built by uvicorn for each connection (``config``, ``server_state``, ``app_state``,
    ``_loop``); ``context`` is the server's TLS context (it requires a client certificate),
    ``number`` the connection's number and ``closed`` is told it when the connection closes.
    After the handshake it stays the TLS layer's protocol and passes everything on to
    uvicorn's, holding what arrives before that one is connected.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        context: ssl.SSLContext,
        number: int = 0,
        closed: Callable[[int], None] = lambda number: None,
    ) -> None:
        self._loop = _loop or asyncio.get_event_loop()
        self._http = HttpToolsProtocol(config, server_state, app_state, self._loop)
        self._context = context
        self._number = number
        self._closed = closed
        self._upgrade: asyncio.Task[None] | None = None
        self._ready = False
        self._early: list[bytes] = []
        self._eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # nothing is read until the TLS layer takes over
        self._upgrade = self._loop.create_task(self._handshake(transport))

    async def _handshake(self, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        address = f"{peer[0]}:{peer[1]}" if peer else "?"
        try:
            tls = await self._loop.start_tls(
                transport,
                self,
                self._context,
                server_side=True,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
            )
        except (OSError, TimeoutError, asyncio.CancelledError) as error:
            LOG.warning("sites: TLS handshake from %s refused: %s", address, _reason(error))
            transport.abort()
            return
        if tls is None:
            transport.abort()
            return
        ssl_object = tls.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        self._http.app = _WithPeer(self._http.app, der or b"", self._number)
        self._http.connection_made(tls)
        self._ready = True
        for data in self._early:
            self._http.data_received(data)
        self._early.clear()
        if self._eof:
            self._http.eof_received()

    def data_received(self, data: bytes) -> None:
        """Decrypted bytes: uvicorn's, once it is connected."""
        if self._ready:
            self._http.data_received(data)
        else:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        """The peer will send no more."""
        if self._ready:
            self._http.eof_received()
        else:
            self._eof = True
        return None

    def pause_writing(self) -> None:
        """The TLS layer's buffer is full."""
        if self._ready:
            self._http.pause_writing()

    def resume_writing(self) -> None:
        """The TLS layer's buffer drained."""
        if self._ready:
            self._http.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection closed (after the handshake: uvicorn's protocol and the app's
        ``closed`` are told)."""
        if self._ready:
            self._http.connection_lost(exc)
            self._closed(self._number)


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return str(error.reason or error).lower().replace("_", " ")
    if isinstance(error, TimeoutError | asyncio.CancelledError):
        return f"no handshake within {HANDSHAKE_TIMEOUT_S:g} s"
    return f"{type(error).__name__}: {error}"


class Listener:
    """Serves ``service`` over mutual TLS on ``host:port``, in a thread of its own.

    Parameters
    ----------
    service:
        The ASGI app (its ``started`` and ``stopping`` run on the serving loop).
    host, port:
        Where to listen.
    context:
        The server's TLS context (:func:`redfl.trust.server_context`).
    """

    def __init__(self, service: SiteService, host: str, port: int, context: ssl.SSLContext) -> None:
        self.service = service
        self.host, self.port = host, port
        self._context = context
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None

    def start(self) -> None:
        """Bind and serve; returns once the server accepts connections.

        Raises
        ------
        OSError
            If the address cannot be bound (in use, not this machine's).
        RuntimeError
            If the server did not start in time.
        """
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP named, so that asyncio turns Nagle's algorithm off on every accepted
        # connection (it does for TCP sockets only): else each small write of a reply waits
        # for the peer's delayed ACK (40 ms).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(socket.SOMAXCONN)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)

        numbers = itertools.count(1)

        def protocol(**kwargs: Any) -> TlsFirst:
            number = next(numbers)
            return TlsFirst(
                **kwargs, context=self._context, number=number, closed=self.service.closed
            )

        config = uvicorn.Config(
            self.service,
            http=protocol,  # type: ignore[arg-type]  # a factory, as uvicorn calls it
            lifespan="off",
            ws="none",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,
            server_header=False,
        )
        server = uvicorn.Server(config)
        self._server = server

        async def serve() -> None:
            await self.service.started()
            try:
                await server.serve(sockets=[sock])
            finally:
                self.service.stopping()

        self._thread = threading.Thread(
            target=self._run, args=(serve,), name="redfl-sites-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server.started:
            self.stop()
            raise RuntimeError(f"the sites server did not start: {self._failed or 'timeout'}")

    def _run(self, serve: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            asyncio.run(serve())
        except BaseException as error:  # reported by start(); the thread just ends
            self._failed = error

    def stop(self) -> None:
        """Stop serving (open requests get a moment to finish) and join the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
        self._server = None
        self._thread = None
