"""The server's HTTPS endpoints for sites, as one raw ASGI app.

Every request comes over a mutually authenticated TLS connection
(:mod:`redfl.runtime.sites.listener` puts the peer's certificate in the scope) and is
checked by the run's :class:`~redfl.trust.Verifier` before anything else: signed by the
federation's CA, in its validity period, in the register and not revoked (a revocation is
seen by the very next request), of kind ``site`` and named in ``expected`` (:class:`Peers`
remembers a verified certificate until the register changes). A refusal is ``403`` with the
reason, and logged. Then:

``POST /v1/join``
    Opens the site's session (:meth:`Roster.join`): ``200`` with the
    :class:`~redfl.runtime.sites.wire.Welcome`, ``409`` while another connection of the
    same site is alive, ``410`` once the run has ended.
``GET /v1/work?have=JOB,...`` (header ``X-Redfl-Session``)
    A long poll: ``200`` with the oldest task the site does not have yet, ``204`` after
    ``poll_seconds`` without one, ``404`` for an unknown session (join again), ``410`` once
    the run has ended.
``POST /v1/reply`` (headers ``X-Redfl-Session``, ``X-Redfl-Job``)
    A task's reply frame. The job must be one this session holds (``409`` otherwise: it
    timed out, was answered, or was never given to this site). The body's size is checked
    against the job's limit before it is read (``Content-Length`` first, then the bytes as
    they arrive): a larger one is ``413`` and the site's client fails; a malformed one is
    ``400`` and the site's client fails.

Bodies the server does not expect are never read: a join is at most
:data:`JOIN_BODY_BYTES`, a poll has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography import x509

from redfl.runtime.sites.roster import Roster, RunOver, Session, SiteBusy
from redfl.runtime.sites.wire import VERSION
from redfl.trust import Identity, UntrustedError, Verifier

LOG = logging.getLogger("redfl.sites")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JOIN_BODY_BYTES = 64 * 1024
"""The largest join request body."""
MAX_HAVE = 256
"""The most job ids a poll may say its site has."""
OFFLOAD_BYTES = 1 << 20
"""Replies larger than this are checked off the event loop (in a thread)."""
EXPIRE_EVERY_S = 0.25
"""How often ended leases are looked for."""
MAX_PEERS = 100_000
"""The most verified certificates remembered (all are forgotten past it)."""


class TooLarge(Exception):
    """A body went past its limit."""


class Gone(Exception):
    """The connection closed before the body was read."""


class Peers:
    """The verifier's answers, remembered until the register changes.

    A full check (:meth:`Verifier.identity`: parse the certificate, verify its signature,
    its validity, the register) costs about a quarter of a millisecond; a site makes several
    requests per round. So a certificate that passed is remembered with the register file's
    state at that check (inode, size, modification time) and its expiry; a later request
    with it passes without a new check while the file is unchanged and the certificate has
    not expired. Any change of the register (a revocation) makes every certificate checked
    in full again, so a revocation is still seen by the very next request.

    Parameters
    ----------
    verifier:
        The endpoint's verifier (its CA, register, kinds and names).
    register:
        The register file it reads.
    """

    def __init__(self, verifier: Verifier, register: Path) -> None:
        self.verifier = verifier
        self.register = register
        self._known: dict[bytes, tuple[Identity, tuple[int, int, int], datetime]] = {}

    def identity(self, der: bytes) -> Identity:
        """Who ``der`` identifies (as :meth:`Verifier.identity`).

        Raises
        ------
        UntrustedError
            As :meth:`Verifier.identity`, or if the register cannot be examined.
        """
        try:
            info = os.stat(self.register)
        except OSError as error:
            raise UntrustedError(
                f"the register cannot be read, refusing everyone: {error}"
            ) from None
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        known = self._known.get(der)
        if known is not None and known[1] == stamp and datetime.now(UTC) <= known[2]:
            return known[0]
        who = self.verifier.identity(der)
        expiry = x509.load_der_x509_certificate(der).not_valid_after_utc
        if len(self._known) >= MAX_PEERS:
            self._known.clear()
        self._known[der] = (who, stamp, expiry)
        return who


class SiteService:
    """The ASGI app the sites talk to.

    Parameters
    ----------
    roster:
        The run's sites and sessions.
    peers:
        Checks each request's certificate (the trust home's CA and register; kind
        ``site``; the expected names).
    """

    def __init__(self, roster: Roster, peers: Peers) -> None:
        self.roster = roster
        self.peers = peers
        self.loop: asyncio.AbstractEventLoop | None = None
        self._wakes: dict[int, asyncio.Event] = {}
        self._waking: set[int] = set()
        self._pollers: dict[int, Session] = {}
        self._waking_lock = threading.Lock()
        self._reaper: asyncio.Task[None] | None = None

    # -- the event loop's side -----------------------------------------------------------
    async def started(self) -> None:
        """Begin on the serving loop: note it, and look for ended leases regularly."""
        self.loop = asyncio.get_running_loop()
        self._reaper = self.loop.create_task(self._expire())

    async def _expire(self) -> None:
        while True:
            self.roster.expire()
            await asyncio.sleep(EXPIRE_EVERY_S)

    def stopping(self) -> None:
        """Stop looking for ended leases (on the serving loop, as it shuts down)."""
        if self._reaper is not None:
            self._reaper.cancel()
        self.loop = None

    def wake(self, session: Session) -> None:
        """Make ``session``'s open poll look again (from any thread, never blocking).

        Wakes are gathered: a round queues a job per site from the driver's thread, and one
        call into the loop wakes every poll concerned.
        """
        loop = self.loop
        if loop is None:
            return
        with self._waking_lock:
            first = not self._waking
            self._waking.add(session.number)
        if first:
            with contextlib.suppress(RuntimeError):  # the loop closed: no poll is open
                loop.call_soon_threadsafe(self._wake_all)

    def closed(self, number: int) -> None:
        """Connection ``number`` closed (on the serving loop): a session whose last poll came
        on it is gone unless its site polls again soon."""
        session = self._pollers.pop(number, None)
        if session is not None:
            self.roster.connection_closed(session)

    def _wake_all(self) -> None:
        with self._waking_lock:
            numbers, self._waking = self._waking, set()
        for number in numbers:
            self._wake_event(number).set()

    def _wake_event(self, number: int) -> asyncio.Event:
        event = self._wakes.get(number)
        if event is None:
            event = self._wakes[number] = asyncio.Event()
        return event

    # -- requests ------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        address = _address(scope)
        der = scope.get("extensions", {}).get("tls", {}).get("client_cert_der")
        try:
            if not der:
                raise UntrustedError("the peer presented no certificate")
            who = self.peers.identity(der)
        except UntrustedError as error:
            LOG.warning("sites: refused %s %s from %s: %s", *_line(scope), address, error.reason)
            await _json(send, 403, {"error": f"refused: {error.reason}"})
            return
        route = (scope["method"], scope["path"])
        if route == ("POST", "/v1/join"):
            await self._join(who.name, address, receive, send)
        elif route == ("GET", "/v1/work"):
            await self._work(who.name, scope, receive, send)
        elif route == ("POST", "/v1/reply"):
            await self._reply(who.name, scope, receive, send)
        else:
            await _json(send, 404, {"error": f"no route {scope['method']} {scope['path']}"})

    async def _join(self, name: str, address: str, receive: Receive, send: Send) -> None:
        try:
            body = await _body(receive, JOIN_BODY_BYTES)
            request = json.loads(body or b"{}")
        except TooLarge:
            await _json(send, 413, {"error": f"a join body has at most {JOIN_BODY_BYTES} bytes"})
            return
        except Gone:
            return
        except ValueError:
            await _json(send, 400, {"error": "a join body is a JSON object"})
            return
        if not isinstance(request, dict) or request.get("v") != VERSION:
            await _json(send, 400, {"error": f"a join body is {{'v': {VERSION}}}"})
            return
        try:
            _, welcome = self.roster.join(name, address)
        except SiteBusy as error:
            LOG.warning("sites: refused a join of %r from %s: %s", name, address, error)
            await _json(send, 409, {"error": str(error)})
            return
        except RunOver as error:
            await _json(send, 410, {"error": str(error)})
            return
        LOG.info("sites: %r joined from %s", name, address)
        await _json(send, 200, welcome.to_json())

    async def _work(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        session = self._session(name, scope)
        if session is None:
            await _json(send, 404, {"error": "unknown session: join again"})
            return
        if self.roster.finished:
            await _json(send, 410, {"error": "the run has ended"})
            return
        have = set(_query(scope, "have")[:MAX_HAVE])
        try:
            await _body(receive, 0)
        except (TooLarge, Gone):
            return
        wake = self._wake_event(session.number)
        self._pollers[scope.get("extensions", {}).get("tls", {}).get("connection", 0)] = session
        closed = asyncio.ensure_future(receive())  # done when the connection closes
        deadline = time.monotonic() + self.roster.info.poll_seconds
        self.roster.poll_begin(session)
        gone = False
        try:
            while True:
                wake.clear()
                if self.roster.finished:
                    await _json(send, 410, {"error": "the run has ended"})
                    return
                if session.ended is not None:
                    await _json(send, 404, {"error": f"session ended: {session.ended}"})
                    return
                job = self.roster.next_job(session, have)
                if job is not None:
                    await _send(send, 200, "application/octet-stream", job.chunks)
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    await _send(send, 204, None, [])
                    return
                woken = asyncio.ensure_future(wake.wait())
                await asyncio.wait(
                    {closed, woken}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                woken.cancel()
                if closed.done():
                    gone = True
                    return
        finally:
            closed.cancel()
            self.roster.poll_end(session, gone)
            if session.ended is not None:
                self._wakes.pop(session.number, None)

    async def _reply(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        session = self._session(name, scope)
        if session is None:
            await _json(send, 404, {"error": "unknown session: join again"})
            return
        job_id = _header(scope, b"x-redfl-job")
        job = self.roster.peek(session, job_id)
        if job is None:
            await _json(
                send,
                409,
                {
                    "error": f"job {job_id!r} is not awaited from site {name!r} (it timed out, "
                    "was answered already, or was never given to it)"
                },
            )
            return
        length = _header(scope, b"content-length")
        if not length.isdigit():
            await _json(send, 411, {"error": "a reply needs a Content-Length"})
            return
        if int(length) > job.limit:
            await self._too_large(session, job_id, int(length), job.limit, send)
            return
        try:
            body = await _body(receive, job.limit)
        except TooLarge:
            await self._too_large(session, job_id, job.limit + 1, job.limit, send)
            return
        except Gone:
            return  # the job stays: the site sends it again
        taken = self.roster.take(session, job_id)
        if taken is None:
            await _json(send, 409, {"error": f"job {job_id!r} is not awaited any more"})
            return
        if len(body) > OFFLOAD_BYTES:
            ok = await asyncio.to_thread(taken.answer, body)
        else:
            ok = taken.answer(body)
        self.roster.settled(session, taken)
        if not ok:
            reason = taken.future.result().failures[0].reason
            LOG.warning("sites: %r: %s", name, reason)
            await _json(send, 400, {"error": reason})
            return
        await _json(send, 200, {"ok": True})

    async def _too_large(
        self, session: Session, job_id: str, size: int, limit: int, send: Send
    ) -> None:
        job = self.roster.take(session, job_id)
        reason = f"the site's reply has {size} bytes, more than the {limit} allowed"
        if job is not None:
            self.roster.refuse(session, job, reason)
        LOG.warning("sites: %r: %s", session.slot.name, reason)
        await _json(send, 413, {"error": reason})

    def _session(self, name: str, scope: Scope) -> Session | None:
        return self.roster.find(name, _header(scope, b"x-redfl-session"))


# -- ASGI helpers ------------------------------------------------------------------------
async def _body(receive: Receive, limit: int) -> bytes:
    """The request body, refusing it as soon as it passes ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Gone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _send(send: Send, status: int, kind: str | None, chunks: list[bytes]) -> None:
    body = b"".join(chunks)  # one write (one TLS record run) rather than one per chunk
    headers = [(b"content-length", str(len(body)).encode())]
    if kind is not None:
        headers.append((b"content-type", kind.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, body: dict[str, Any]) -> None:
    await _send(send, status, "application/json", [json.dumps(body).encode()])


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def _query(scope: Scope, name: str) -> list[str]:
    values = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1")).get(name, [])
    return [item for value in values for item in value.split(",") if item]


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"


def _line(scope: Scope) -> tuple[str, str]:
    return str(scope.get("method", "?")), str(scope.get("path", "?"))
