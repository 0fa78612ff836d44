"""Provisioned trust: one CA per federation, a credential per member, mutual TLS on every hop.

A federation's *trust home* (:class:`TrustHome`) is a folder on the server's side holding a
certificate authority. Every *member* (a site, the server, a leaf client process, a relay,
the routing proxy, an operator's tool) gets a *bundle* (:class:`Bundle`): its own private key,
a certificate the CA signed that states its name and kind, and the CA certificate. Members and
the server then meet over TLS where both sides present a certificate; each side checks the
other against the CA, and the listening side names the peer with a :class:`Verifier`.

What the CA key protects. Whoever holds ``ca.key`` can mint a certificate for any name and
kind, the server's included, that every member will accept. It never leaves the home (mode
0600 in a 0700 folder); no member receives it. If it leaks, the only remedy is a new home and
new bundles for everyone.

What a member can and cannot do. With its bundle a member proves its own name and kind to
anyone who trusts the CA, and checks that it reached the real server (the server's certificate
chains to the same CA and names the host). It cannot issue certificates, take another name or
kind (both are inside the signed certificate), or stretch its validity. Anyone who copies its
bundle *is* that member until the credential expires or is revoked: bundles are written with
mode 0600, handed over out of band, and refused when group or others may read them.

Kinds. :data:`Kind` lists them; kinds that also listen (server, lcp, relay, proxy) get
certificates valid for TLS servers too, for the IP addresses and names they are reached at.
An endpoint states which kinds (and, if it knows them, which names) it accepts; a valid
member of another kind is refused.

Revocation and its latency. :meth:`TrustHome.revoke` marks the credential in the register
and rewrites the CRL. A :class:`Verifier` built with the register looks at the file (one
``stat``) before every check and rereads it when it changed, so the very next check refuses
the member: no restart, no polling period. Connections already open stay open until the
caller checks again or closes them; a long-lived connection should be re-verified (or
dropped) when it matters. A verifier without the register (a member checking the server with
only its bundle) does not see revocations, nor does a TLS context that loaded the CRL file
once: reload it to see new revocations. Expiry needs no action: TLS and the verifier both
refuse expired certificates.

Keys are ECDSA P-256 (see :mod:`redfl.trust.certs` for why not Ed25519). Every primitive comes
from the ``cryptography`` package and OpenSSL through ``ssl``.
"""

from redfl.trust.bundle import Bundle, BundleError, JsonValue
from redfl.trust.home import CLOCK_SKEW, TrustHome, TrustHomeError
from redfl.trust.identity import (
    KINDS,
    LISTENING_KINDS,
    Identity,
    Kind,
    UntrustedError,
    check_name,
    parse_kind,
)
from redfl.trust.register import Record, Register, RegisterError, Revocation
from redfl.trust.tls import client_context, peer_identity, server_context
from redfl.trust.verify import Verifier

__all__ = [
    "CLOCK_SKEW",
    "KINDS",
    "LISTENING_KINDS",
    "Bundle",
    "BundleError",
    "Identity",
    "JsonValue",
    "Kind",
    "Record",
    "Register",
    "RegisterError",
    "Revocation",
    "TrustHome",
    "TrustHomeError",
    "UntrustedError",
    "Verifier",
    "check_name",
    "client_context",
    "parse_kind",
    "peer_identity",
    "server_context",
]
