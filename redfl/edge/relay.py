"""A relay: the communication hop between the LCPs of a subtree and the server.

A relay of the tree (``relay-1-2``) listens with mutual TLS and takes ``POST /sync`` from the
members just below it, and from no one else: the LCPs whose leaf relay it is and the relays
whose parent it is, each checked against the tree's register. A sync must name an LCP the
caller speaks for (:func:`redfl.edge.wire.speaks_for`). The relay passes the body on,
unchanged, to its ``upstream`` (its parent relay, or the server) over a kept-alive TLS
connection made with its own credential, and returns the answer: a relay adds a hop, never a
change to what is folded, so an LCP that syncs through relays gets the same verdicts as one
that reaches the server directly. Relays carry messages across network boundaries (an LCP's
site may reach only its relay); they aggregate nothing here.

``GET /stats`` (an operator) counts the syncs passed on and the time each exchange upstream
took; ``GET /health`` answers any member of the tree.
"""

from __future__ import annotations

import time
from collections import deque

import httpx
from fastapi import FastAPI

from redfl.edge.errors import error_body
from redfl.edge.fastpath import serve_routes
from redfl.edge.forward import ForwardError, LcpConnections
from redfl.edge.protocol import Status
from redfl.edge.provision import Member
from redfl.edge.routes import Answer, Operator, PeerCertificate, Route, guard
from redfl.edge.server import MAX_SYNC_BYTES
from redfl.edge.timing import Samples, summary
from redfl.edge.wire import SyncReply, SyncRequest, speaks_for
from redfl.topology.tree import RelayTree
from redfl.trust import KINDS

__all__ = ["relay_app"]

_JSON = {"content-type": "application/json"}


def relay_app(name: str, tree: RelayTree, upstream: str, member: Member) -> FastAPI:
    """The ASGI app of relay ``name`` of ``tree``, passing syncs on to ``upstream``.

    Parameters
    ----------
    name : str
        The relay's site name.
    tree : RelayTree
        The tree (who is below the relay).
    upstream : str
        Base URL (``https://``) of the parent relay or the server.
    member : Member
        The relay's credential and the verifier of its callers.

    Raises
    ------
    ValueError
        If ``name`` is not a relay of ``tree``.
    """
    if name not in tree or tree.site(name).kind != "relay":
        raise ValueError(f"{name!r} is not a relay of the tree")
    lcps = frozenset(s.name for s in tree.lcps if s.relay == name)
    relays = frozenset(s.name for s in tree.children(name, ["relay"]))
    callers = PeerCertificate(member.peers, {"lcp": lcps, "relay": relays})
    url = httpx.URL(upstream)
    parent = tree.site(name).parent
    allowed = {"server": ("server",)} if parent == "server" else {"relay": (parent or "",)}
    pool = LcpConnections(
        url.host,
        url.port or 443,
        timeout=30.0,
        ssl=member.client_tls(),
        expect=member.peers.acceptor(allowed),  # type: ignore[arg-type]
    )
    exchanges: Samples = deque(maxlen=100_000)
    app = FastAPI(title=f"redfl relay {name}", docs_url=None, redoc_url=None)

    async def sync(request: SyncRequest, caller: str, body: bytes) -> Answer:
        refusal = speaks_for(tree, caller, request.lcp)
        if refusal:
            return 403, error_body(Status.ERROR, refusal)
        start = time.perf_counter()
        try:
            answer = await pool.post("/sync", body, _JSON)
        except ForwardError as exc:
            return 502, error_body(Status.RETRY, f"relay {name}: upstream unreachable: {exc}")
        exchanges.append(time.perf_counter() - start)
        return answer

    meanings = {
        403: "The caller may not sync for the LCP the body names",
        502: "The upstream (parent relay or server) could not be reached: retry",
    }
    serve_routes(
        app, [Route("/sync", SyncRequest, SyncReply, sync, callers, meanings, MAX_SYNC_BYTES)]
    )
    operator = guard(app, Operator(member.peers))
    anyone = guard(app, PeerCertificate(member.peers, dict.fromkeys(KINDS)))

    @app.get("/health", dependencies=[anyone])
    async def health() -> dict[str, str]:
        return {"status": "OK", "relay": name}

    @app.get("/stats", dependencies=[operator])
    async def stats() -> dict[str, object]:
        """Syncs passed on, and the time of each exchange upstream."""
        return {"syncs": len(exchanges), "upstream": summary(exchanges)}

    return app
