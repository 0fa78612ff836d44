"""``ssl`` contexts for mutually authenticated TLS with a trust home's CA, and the peer's name.

Both sides speak TLS 1.2 or 1.3, trust the CA and nothing else (no system roots), and apply
OpenSSL's strict X.509 checks. The server asks every client for a certificate; the client
checks the server's certificate and host name and presents its own. A handshake proves that the
peer holds a key the CA certified and that the certificate is in its validity period; who the
peer is and whether it is still welcome is :func:`peer_identity`'s answer, asked right after the
handshake (it sees revocations the handshake cannot).
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

from redfl.trust.bundle import Bundle
from redfl.trust.files import PRIVATE, write_atomic
from redfl.trust.home import TrustHome
from redfl.trust.identity import LISTENING_KINDS, Identity, UntrustedError
from redfl.trust.verify import Verifier

__all__ = ["client_context", "peer_identity", "server_context"]


def server_context(
    source: TrustHome | Bundle, *, require_client_cert: bool = True
) -> ssl.SSLContext:
    """A TLS server context that presents the server's (or a listening member's) certificate.

    Parameters
    ----------
    source
        A trust home (the server's credential from ``server.key``/``server.pem``) or the bundle
        of a member whose kind listens (an LCP, a relay, a proxy, an edge server).
    require_client_cert
        Whether a client without a certificate is refused in the handshake; when false, a
        certificate a client does present is still checked against the CA.

    Returns
    -------
    ssl.SSLContext
        TLS 1.2+, the CA as the only root for client certificates.

    Raises
    ------
    ValueError
        If the bundle's kind does not listen.
    """
    context = _context(server_side=True)
    if isinstance(source, TrustHome):
        context.load_cert_chain(source.server_cert_path, source.server_key_path)
        context.load_verify_locations(cadata=source.ca_pem)
    else:
        kind = source.identity.kind
        if kind not in LISTENING_KINDS:
            raise ValueError(
                f"a {kind!r} credential cannot serve TLS; kinds that listen: "
                f"{', '.join(sorted(LISTENING_KINDS))}"
            )
        _load_bundle(context, source)
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


def client_context(bundle: Bundle) -> ssl.SSLContext:
    """A TLS client context that presents the member's certificate and checks the server's.

    The server's certificate must chain to the bundle's CA and name the host the client
    connects to (pass ``server_hostname`` when wrapping the socket).

    Parameters
    ----------
    bundle
        The member's bundle.

    Returns
    -------
    ssl.SSLContext
        TLS 1.2+, host name check on, the CA as the only root.
    """
    context = _context(server_side=False)
    _load_bundle(context, bundle)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def peer_identity(connection: ssl.SSLSocket | ssl.SSLObject, verifier: Verifier) -> Identity:
    """The verified identity of the peer of a finished TLS handshake.

    Parameters
    ----------
    connection
        A TLS socket or object after its handshake.
    verifier
        The verifier of this endpoint (CA, register, accepted kinds and names).

    Returns
    -------
    Identity
        The peer's name, kind and certificate serial.

    Raises
    ------
    UntrustedError
        If the peer presented no certificate, or the verifier refuses it.
    """
    der = connection.getpeercert(binary_form=True)
    if not der:
        raise UntrustedError("the peer presented no certificate")
    return verifier.identity(der)


def _context(*, server_side: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def _load_bundle(context: ssl.SSLContext, bundle: Bundle) -> None:
    """Load the bundle's CA as the only root and its key and certificate as this side's.

    ``ssl`` loads a key only from a file: it is written for the moment into a private
    temporary folder (mode 0700, the file 0600) and removed at once.
    """
    context.load_verify_locations(cadata=bundle.ca_pem)
    with tempfile.TemporaryDirectory(prefix="redfl-trust-") as folder:
        chain = Path(folder) / "member.pem"
        write_atomic(chain, (bundle.key_pem + bundle.cert_pem).encode(), PRIVATE)
        context.load_cert_chain(chain)
