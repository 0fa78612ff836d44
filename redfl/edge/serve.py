"""Run the edge services under uvicorn, over TLS: the routing proxy, the relays, the LCPs and
the server.

Every internal service listens with mutual TLS (:meth:`redfl.edge.provision.Member.server_tls`:
the member's certificate, the tree's CA as the only root, a client certificate required),
and its HTTP protocol (:class:`TlsHttp`) passes the client's certificate to the app in each
request's ASGI scope, as the ASGI TLS extension describes it
(``scope["extensions"]["tls"]["client_cert_chain"]``), read once per connection. The routing
proxy's public port speaks TLS with the certificate given by ``--tls-cert``/``--tls-key``
(client certificates optional: an operator's is checked for ``/stats``) or plain HTTP
without them.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from redfl.edge.fleet import Fleet
from redfl.edge.jobs import JobSpec
from redfl.edge.lcp import LcpService
from redfl.edge.lcp_app import lcp_app
from redfl.edge.provision import Member, read_lcp_map
from redfl.edge.proxy import proxy_app
from redfl.edge.relay import relay_app
from redfl.edge.server import server_app
from redfl.topology.tree_file import load_tree
from redfl.trust import server_context

__all__ = [
    "TlsHttp",
    "proxy_tls",
    "public_tls",
    "serve_lcp",
    "serve_proxy",
    "serve_relay",
    "serve_server",
    "server_config",
]


class TlsHttp(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, with the ASGI TLS extension in every request's scope."""

    _tls: dict[str, dict[object, object]] | None = None

    def connection_made(self, transport: Any) -> None:
        """Read the peer's certificate once, when the (finished) handshake hands over the
        connection."""
        super().connection_made(transport)
        tls = transport.get_extra_info("ssl_object")
        if tls is None:
            return
        der = tls.getpeercert(binary_form=True)
        chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
        self._tls = {
            "tls": {
                "server_cert": None,
                "client_cert_chain": chain,
                "client_cert_name": None,
                "client_cert_error": None,
                "tls_version": None,
                "cipher_suite": None,
            }
        }

    def on_message_begin(self) -> None:
        """Start a request's scope, with the connection's TLS extension."""
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = self._tls


def public_tls(cert: Path, key: Path, ca_pem: str) -> ssl.SSLContext:
    """The routing proxy's public TLS: ``cert``/``key`` (PEM files) presented to devices; a
    client certificate is optional and, when sent, must chain to the tree's CA (``ca_pem``).

    Raises
    ------
    ValueError
        Naming the file that cannot be read or does not hold a key and its certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"--tls-cert {cert} / --tls-key {key}: {exc}") from None
    context.load_verify_locations(cadata=ca_pem)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def server_config(
    app: object, host: str, port: int, tls: ssl.SSLContext | None, **options: Any
) -> uvicorn.Config:
    """uvicorn's config of an edge service (``tls``: its TLS context, or None for HTTP).

    No X-Forwarded-* handling: no service reads the client's address, and it costs a parse
    of the peer address on every request.
    """
    extra: dict[str, Any] = {}
    if tls is not None:
        extra["ssl_context_factory"] = lambda config, default: tls
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        http=TlsHttp,
        ws="none",
        **extra,
        **options,
    )


def _run(app: object, host: str, port: int, tls: ssl.SSLContext | None) -> None:
    uvicorn.Server(server_config(app, host, port, tls)).run()


def proxy_tls(
    member: Member, tls: bool, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext | None:
    """The proxy's public TLS: ``cert`` and ``key`` when given, else with ``tls`` the tree's
    proxy certificate (devices then trust the tree's CA), else None (plain HTTP)."""
    if cert is not None and key is not None:
        return public_tls(cert, key, member.bundle.ca_pem)
    if tls:
        return server_context(member.bundle, require_client_cert=False)
    return None


def serve_proxy(
    tree_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Serve the routing proxy for the LCPs of ``tree_dir/lcp_map.json`` until interrupted
    (``tls``: its port's TLS, :func:`proxy_tls`).

    Raises
    ------
    ValueError
        If ``lcp_map.json``, the edge secrets, the enrolment settings or the proxy's
        credential is missing or malformed.
    """
    member = Member.load(tree_dir, "proxy")
    lcps = {name: address.url for name, address in read_lcp_map(tree_dir).items()}
    fleet = Fleet.of_tree(tree_dir)
    _run(proxy_app(lcps, fleet, member), host, port, tls)


def serve_lcp(
    tree_dir: Path, name: str, upstream: str, host: str = "127.0.0.1", port: int = 9000
) -> None:
    """Serve LCP ``name``, syncing with ``upstream`` (the server, or its relay)."""
    member = Member.load(tree_dir, name)
    service = LcpService(name, upstream.rstrip("/"), member)
    _run(lcp_app(service), host, port, member.server_tls())


def serve_relay(
    tree_dir: Path, name: str, upstream: str, host: str = "127.0.0.1", port: int = 9000
) -> None:
    """Serve relay ``name``, passing its subtree's syncs on to ``upstream``."""
    member = Member.load(tree_dir, name)
    tree = load_tree(tree_dir).tree
    _run(relay_app(name, tree, upstream.rstrip("/"), member), host, port, member.server_tls())


def serve_server(tree_dir: Path, job: JobSpec, host: str = "127.0.0.1", port: int = 8100) -> None:
    """Serve the edge server of one job, for the LCPs and relays of ``tree_dir``'s tree."""
    member = Member.load(tree_dir, "server")
    tree = load_tree(tree_dir).tree
    _run(server_app(job, tree, member), host, port, member.server_tls())
