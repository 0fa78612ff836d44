"""Run the edge services under uvicorn: the routing proxy, an LCP, the server."""

from __future__ import annotations

from pathlib import Path

import uvicorn

from redfl.edge.jobs import JobSpec
from redfl.edge.lcp import LcpService
from redfl.edge.lcp_app import lcp_app
from redfl.edge.provision import load_or_create_secrets, read_lcp_map
from redfl.edge.proxy import proxy_app
from redfl.edge.server import server_app
from redfl.edge.tokens import TokenSigner

__all__ = ["serve_lcp", "serve_proxy", "serve_server"]


def _run(app: object, host: str, port: int) -> None:
    # no X-Forwarded-* handling: no service reads the client's address, and it costs a parse
    # of the peer address on every request
    uvicorn.run(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
    )


def serve_proxy(tree_dir: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the routing proxy for the LCPs of ``tree_dir/lcp_map.json`` until interrupted.

    Raises
    ------
    ValueError
        If ``lcp_map.json`` or ``edge_secrets.json`` is missing or malformed.
    """
    lcps = {name: address.url for name, address in read_lcp_map(tree_dir).items()}
    secrets = load_or_create_secrets(tree_dir)
    signer = TokenSigner(bytes.fromhex(secrets.token_secret))
    _run(proxy_app(lcps, signer, secrets.enroll_secret), host, port)


def serve_lcp(name: str, server_url: str, host: str = "127.0.0.1", port: int = 9000) -> None:
    """Serve one LCP that syncs with the server at ``server_url``."""
    _run(lcp_app(LcpService(name, server_url.rstrip("/"))), host, port)


def serve_server(job: JobSpec, host: str = "127.0.0.1", port: int = 8100) -> None:
    """Serve the edge server of one job."""
    _run(server_app(job), host, port)
