"""Provisioned trust: a home's CA, member bundles, revocation at once, and real mutual TLS on
127.0.0.1 (a server thread, clients in the test, every wait with a deadline)."""

from __future__ import annotations

import json
import os
import queue
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from redfl.trust import (
    Bundle,
    BundleError,
    Identity,
    TrustHome,
    TrustHomeError,
    UntrustedError,
    Verifier,
    client_context,
    peer_identity,
    server_context,
)

Outcome = tuple[str, object]
"""What the server saw of one connection: ("ok", Identity), ("untrusted", reason) when the
verifier refused a finished handshake, or ("handshake", error) when TLS itself refused."""


@dataclass
class Server:
    """A TLS server thread on 127.0.0.1 that names each client or records why it refused it."""

    context: ssl.SSLContext
    verifier: Verifier
    listener: socket.socket = field(init=False)
    outcomes: queue.Queue[Outcome] = field(default_factory=queue.Queue)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = int(self.listener.getsockname()[1])

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            raw.settimeout(10)
            try:
                with self.context.wrap_socket(raw, server_side=True) as tls:
                    try:
                        who = peer_identity(tls, self.verifier)
                    except UntrustedError as exc:
                        self.outcomes.put(("untrusted", exc.reason))
                        continue
                    tls.sendall(f"hello {who.kind} {who.name}\n".encode())
                    self.outcomes.put(("ok", who))
            except (ssl.SSLError, OSError) as exc:
                raw.close()
                self.outcomes.put(("handshake", str(exc)))

    def next_outcome(self) -> Outcome:
        return self.outcomes.get(timeout=10)


@contextmanager
def serving(context: ssl.SSLContext, verifier: Verifier) -> Iterator[Server]:
    server = Server(context, verifier)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        thread.join(timeout=10)
        server.listener.close()
    assert not thread.is_alive()


def talk(port: int, context: ssl.SSLContext, hostname: str = "127.0.0.1") -> str:
    """Connect, read the server's line; what went wrong instead, as 'error: ...'."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=hostname) as tls,
        ):
            return tls.recv(200).decode()
    except (ssl.SSLError, OSError) as exc:
        return f"error: {exc}"


def der(bundle: Bundle) -> bytes:
    return x509.load_pem_x509_certificate(bundle.cert_pem.encode()).public_bytes(Encoding.DER)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def home(tmp_path: Path) -> TrustHome:
    return TrustHome.init(tmp_path / "home")


# -- the home and its files ----------------------------------------------------------------


def test_init_writes_private_keys_0600_and_certificates_for_the_server_names(
    tmp_path: Path,
) -> None:
    old = os.umask(0)  # modes must not depend on the umask
    try:
        home = TrustHome.init(tmp_path / "h", server_names=("127.0.0.1", "fl.example.org"))
    finally:
        os.umask(old)
    assert mode(home.path) == 0o700
    assert mode(home.path / "ca.key") == 0o600
    assert mode(home.server_key_path) == 0o600
    for public in (home.ca_cert_path, home.server_cert_path, home.register_path, home.crl_path):
        assert mode(public) == 0o644, public
    cert = x509.load_pem_x509_certificate(home.server_cert_path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["fl.example.org"]
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:redfl:server:server"]
    [record] = home.register().records
    assert (record.name, record.kind, record.serial) == ("server", "server", cert.serial_number)


def test_init_refuses_an_existing_home_and_a_non_empty_folder(tmp_path: Path) -> None:
    TrustHome.init(tmp_path / "h")
    with pytest.raises(TrustHomeError, match="it exists and is a trust home"):
        TrustHome.init(tmp_path / "h")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(TrustHomeError, match="it exists and is not an empty folder"):
        TrustHome.init(tmp_path / "busy")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert TrustHome.init(tmp_path / "empty").register().records[0].name == "server"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "empty", "h"]  # no leftovers


def test_a_home_with_a_readable_ca_key_or_a_missing_file_is_refused(home: TrustHome) -> None:
    (home.path / "ca.key").chmod(0o640)
    with pytest.raises(TrustHomeError, match=r"ca\.key .*\(mode 0640\); run 'chmod 600"):
        TrustHome(home.path)
    (home.path / "ca.key").chmod(0o600)
    home.crl_path.unlink()
    with pytest.raises(TrustHomeError, match=r"is not a trust home \(crl\.pem missing\)"):
        TrustHome(home.path)


@pytest.mark.parametrize("name", ["", "a" * 65, "-lead", ".", "..", "a b", "a/b", "é", "a:b"])
def test_member_names_are_validated(home: TrustHome, name: str) -> None:
    with pytest.raises(ValueError, match=f"invalid member name {name!r}: a name is 1-64"):
        home.issue(name, "site")


@pytest.mark.parametrize("name", ["a", "A-1_b.c", "x" * 64, "7"])
def test_safe_names_are_issued(home: TrustHome, name: str) -> None:
    assert home.issue(name, "site").identity.name == name


def test_unknown_kinds_and_hosts_for_a_client_kind_are_refused(home: TrustHome) -> None:
    with pytest.raises(ValueError, match="kind 'admin': a kind is one of site, server, lcp"):
        home.issue("x", "admin")
    with pytest.raises(ValueError, match=r"hosts are only for kinds that listen .* not for 'site'"):
        home.issue("x", "site", hosts=["127.0.0.1"])
    with pytest.raises(ValueError, match="invalid host 'bad host'"):
        home.issue("x", "lcp", hosts=["bad host"])
    with pytest.raises(ValueError, match="would outlive the CA"):
        home.issue("x", "site", days=4000)
    assert [r.name for r in home.register().records] == ["server"]


def test_a_name_is_issued_again_only_once_its_credential_is_revoked_or_expired(
    home: TrustHome,
) -> None:
    first = home.issue("site-a", "site")
    with pytest.raises(ValueError, match=r"'site-a' already has a valid credential .* revoke it"):
        home.issue("site-a", "operator")
    home.revoke("site-a", "key rotation")
    second = home.issue("site-a", "site")
    assert second.identity.serial != first.identity.serial
    long_ago = datetime.now(UTC) - timedelta(days=10)
    home.issue("old", "site", days=1, valid_from=long_ago)
    assert home.issue("old", "site").identity.name == "old"
    records = [(r.name, r.revoked is not None) for r in home.register().records]
    assert records == [
        ("server", False),
        ("site-a", True),
        ("site-a", False),
        ("old", False),
        ("old", False),
    ]


def test_the_register_survives_a_reload(home: TrustHome) -> None:
    a = home.issue("site-a", "site")
    b = home.issue("relay-1", "relay", hosts=["127.0.0.1"], days=30)
    before = datetime.now(UTC)
    [revoked] = home.revoke("site-a", "laptop lost")
    again = TrustHome(home.path).register()
    assert again == home.register()
    [ra] = again.named("site-a")
    [rb] = again.named("relay-1")
    assert ra.serial == a.identity.serial and rb.serial == b.identity.serial
    assert rb.kind == "relay" and rb.not_after - rb.not_before == timedelta(days=30)
    assert ra.revoked is not None and ra.revoked.why == "laptop lost"
    assert before <= ra.revoked.when <= datetime.now(UTC)
    assert ra == revoked and rb.revoked is None


def test_revoke_needs_a_reason_and_an_unrevoked_credential(home: TrustHome) -> None:
    home.issue("site-a", "site")
    with pytest.raises(ValueError, match="give a reason"):
        home.revoke("site-a", "  ")
    with pytest.raises(ValueError, match="cannot revoke 'nobody': the register holds no cred"):
        home.revoke("nobody", "why not")
    home.revoke("site-a", "gone")
    with pytest.raises(ValueError, match="holds only revoked credentials of it"):
        home.revoke("site-a", "twice")


def test_every_revoke_writes_a_crl_signed_by_the_ca(home: TrustHome) -> None:
    ca = x509.load_pem_x509_certificate(home.ca_pem.encode()).public_key()
    assert isinstance(ca, ec.EllipticCurvePublicKey)
    empty = x509.load_pem_x509_crl(home.crl_path.read_bytes())
    assert len(empty) == 0 and empty.is_signature_valid(ca)
    a, b = home.issue("a", "site"), home.issue("b", "lcp")
    home.revoke("a", "one")
    home.revoke("b", "two")
    crl = x509.load_pem_x509_crl(home.crl_path.read_bytes())
    assert crl.is_signature_valid(ca)
    assert sorted(r.serial_number for r in crl) == sorted([a.identity.serial, b.identity.serial])
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > empty.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


# -- bundles -------------------------------------------------------------------------------


def test_a_bundle_round_trips_with_mode_0600_and_its_fields(
    home: TrustHome, tmp_path: Path
) -> None:
    bundle = home.issue("site-a", "site").with_fields(server_url="https://127.0.0.1:8443", n=3)
    path = tmp_path / "site-a.json"
    old = os.umask(0)
    try:
        bundle.write(path)
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    loaded = Bundle.load(path)
    assert loaded == bundle
    assert loaded.fields == {"server_url": "https://127.0.0.1:8443", "n": 3}
    assert loaded.identity == Identity("site-a", "site", bundle.identity.serial)
    with pytest.raises(FileExistsError):
        bundle.write(path)
    bundle.with_fields(n=4).write(path, replace=True)
    assert Bundle.load(path).fields["n"] == 4


@pytest.mark.parametrize("bits", [0o640, 0o604, 0o620, 0o700 | 0o040])
def test_a_bundle_group_or_others_may_access_is_refused(
    home: TrustHome, tmp_path: Path, bits: int
) -> None:
    path = tmp_path / "b.json"
    home.issue("site-a", "site").write(path)
    path.chmod(bits)
    with pytest.raises(BundleError, match=f"{path} holds a private key .*mode {bits:04o}"):
        Bundle.load(path)


def edits() -> list[tuple[str, object, str]]:
    """(key, new value, message) of malformed bundles; new value None removes the key."""
    return [
        ("format", "other", "is not a redfl-trust-bundle file"),
        ("version", 2, "has version 2, not 1"),
        ("key", None, "lacks PEM text for key"),
        ("cert", 5, "lacks PEM text for cert"),
        ("cert", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not parse"),
        ("fields", ["a"], "fields must be a JSON object"),
        ("key", "OTHER_KEY", "the private key does not belong to the certificate"),
        ("ca", "OTHER_CA", "the certificate is not signed by the bundle's CA"),
    ]


@pytest.mark.parametrize(("key", "value", "message"), edits())
def test_a_malformed_bundle_is_refused_naming_the_file(
    home: TrustHome, tmp_path: Path, key: str, value: object, message: str
) -> None:
    other = TrustHome.init(tmp_path / "other").issue("x", "site")
    path = tmp_path / "b.json"
    home.issue("site-a", "site").write(path)
    data = json.loads(path.read_text())
    if value is None:
        del data[key]
    else:
        data[key] = {"OTHER_KEY": other.key_pem, "OTHER_CA": other.ca_pem}.get(str(value), value)
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=f"bundle {path} .*{message}"):
        Bundle.load(path)


def test_a_bundle_that_is_not_json_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"{not json")
    os.close(fd)
    with pytest.raises(BundleError, match=f"bundle {path} is not JSON"):
        Bundle.load(path)


# -- the verifier --------------------------------------------------------------------------


def test_the_verifier_names_a_member_and_refuses_what_it_should(
    home: TrustHome, tmp_path: Path
) -> None:
    site = home.issue("site-a", "site")
    verifier = Verifier.of(home)
    assert verifier.identity(der(site)) == site.identity
    now = datetime.now(UTC)
    cases = [
        (TrustHome.init(tmp_path / "o").issue("site-a", "site"), "is not signed by this CA"),
        (home.issue("old", "site", days=1, valid_from=now - timedelta(days=3)), "expired at"),
        (home.issue("soon", "site", valid_from=now + timedelta(days=1)), "not yet valid"),
    ]
    for bundle, reason in cases:
        with pytest.raises(UntrustedError, match=reason):
            verifier.identity(der(bundle))
    with pytest.raises(UntrustedError, match=r"not a DER X\.509 certificate"):
        verifier.identity(b"\x30\x03junk")
    sites = Verifier.of(home, kinds=["site"], names=["site-b"])
    with pytest.raises(UntrustedError, match=r"site 'site-a' .*: name 'site-a' is not expected"):
        sites.identity(der(site))
    operators = Verifier.of(home, kinds=["operator", "relay"])
    with pytest.raises(UntrustedError, match=r"kind 'site' is not accepted here .*operator, relay"):
        operators.identity(der(site))


def test_the_verifier_fails_closed_on_a_lost_register_entry_or_a_broken_register(
    home: TrustHome,
) -> None:
    verifier = Verifier.of(home)
    before = home.register_path.read_bytes()
    site = home.issue("site-a", "site")
    assert verifier.identity(der(site)).name == "site-a"
    home.register_path.write_bytes(before)  # the entry of site-a is lost
    with pytest.raises(UntrustedError, match=r"site 'site-a' \(serial [0-9a-f]+\) is not in the"):
        verifier.identity(der(site))
    home.register_path.write_text("{")
    with pytest.raises(UntrustedError, match="register cannot be read, refusing everyone"):
        verifier.identity(der(site))
    # Without a register the same certificate passes: that verifier cannot see revocations.
    assert Verifier(home.ca_pem, None).identity(der(site)).name == "site-a"


# -- real TLS on 127.0.0.1 -----------------------------------------------------------------


def test_a_member_connects_and_both_sides_read_the_others_identity(home: TrustHome) -> None:
    site = home.issue("site-a", "site")
    for only_our_ca in (server_context(home), client_context(site)):  # no system roots
        roots = [root["subject"] for root in only_our_ca.get_ca_certs()]
        assert roots == [((("commonName", "redfl federation CA"),),)]
    with serving(server_context(home), Verifier.of(home, kinds=["site"])) as server:
        context = client_context(site)
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.recv(200) == b"hello site site-a\n"
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            seen = peer_identity(tls, Verifier.of(site, kinds=["server"]))
        assert (seen.name, seen.kind) == ("server", "server")
        assert server.next_outcome() == ("ok", site.identity)


def test_a_client_refuses_a_server_certificate_for_another_host(home: TrustHome) -> None:
    site = home.issue("site-a", "site")
    with serving(server_context(home), Verifier.of(home)) as server:
        reply = talk(server.port, client_context(site), hostname="fl.example.org")
        assert "certificate verify failed" in reply and "mismatch" in reply
        assert server.next_outcome()[0] == "handshake"


def test_a_client_without_a_certificate_is_refused(home: TrustHome) -> None:
    anonymous = ssl.create_default_context(cadata=home.ca_pem)
    with serving(server_context(home), Verifier.of(home)) as server:
        assert not talk(server.port, anonymous).startswith("hello")
        status, detail = server.next_outcome()
        assert status == "handshake" and "PEER_DID_NOT_RETURN_A_CERTIFICATE" in str(detail)
    with serving(server_context(home, require_client_cert=False), Verifier.of(home)) as s:
        assert talk(s.port, anonymous) == ""
        assert s.next_outcome() == ("untrusted", "the peer presented no certificate")


@pytest.mark.parametrize(
    ("case", "tls_reason"),
    [
        ("another CA", "certificate verify failed"),
        ("expired", "certificate verify failed: certificate has expired"),
    ],
)
def test_tls_refuses_a_foreign_or_expired_client_certificate(
    home: TrustHome, tmp_path: Path, case: str, tls_reason: str
) -> None:
    if case == "another CA":
        member = TrustHome.init(tmp_path / "o").issue("site-a", "site")
    else:
        past = datetime.now(UTC) - timedelta(days=10)
        member = home.issue("site-a", "site", days=1, valid_from=past)
    context = client_context(member)
    context.load_verify_locations(cadata=home.ca_pem)  # the client trusts our server anyway
    with serving(server_context(home), Verifier.of(home)) as server:
        assert not talk(server.port, context).startswith("hello")
        status, detail = server.next_outcome()
        assert status == "handshake" and tls_reason in str(detail)


def test_a_member_revoked_while_the_server_runs_is_refused_at_its_next_connection(
    home: TrustHome,
) -> None:
    site = home.issue("site-a", "site")
    with serving(server_context(home), Verifier.of(home)) as server:
        context = client_context(site)
        assert talk(server.port, context) == "hello site site-a\n"
        assert server.next_outcome()[0] == "ok"
        TrustHome(home.path).revoke("site-a", "laptop lost")  # as another process would
        assert talk(server.port, context) == ""
        status, reason = server.next_outcome()
        assert status == "untrusted"
        serial = site.identity.serial
        assert str(reason).startswith(f"site 'site-a' (serial {serial:x}) was revoked at ")
        assert str(reason).endswith("UTC: laptop lost")
        renewed = home.issue("site-a", "site")
        assert talk(server.port, client_context(renewed)) == "hello site site-a\n"
        assert server.next_outcome() == ("ok", renewed.identity)


def test_a_member_of_a_kind_the_endpoint_does_not_accept_is_refused(home: TrustHome) -> None:
    operator = home.issue("ops", "operator")
    with serving(server_context(home), Verifier.of(home, kinds=["site", "relay"])) as server:
        assert talk(server.port, client_context(operator)) == ""
        assert server.next_outcome() == (
            "untrusted",
            f"operator 'ops' (serial {operator.identity.serial:x}): kind 'operator' is not "
            "accepted here (accepted: relay, site)",
        )


def test_a_listening_member_serves_tls_with_its_bundle(home: TrustHome) -> None:
    lcp = home.issue("lcp-1", "lcp", hosts=["127.0.0.1"])
    relay = home.issue("relay-1", "relay")
    with serving(server_context(lcp), Verifier.of(lcp, kinds=["relay"])) as server:
        assert talk(server.port, client_context(relay)) == "hello relay relay-1\n"
        assert server.next_outcome() == ("ok", relay.identity)
    with pytest.raises(ValueError, match="a 'site' credential cannot serve TLS"):
        server_context(home.issue("site-a", "site"))


def test_tls_with_the_crl_file_loaded_refuses_a_revoked_member(home: TrustHome) -> None:
    kept, gone = home.issue("kept", "site"), home.issue("gone", "site")
    home.revoke("gone", "left the consortium")
    context = server_context(home)
    context.load_verify_locations(cafile=home.crl_path)
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    with serving(context, Verifier(home.ca_pem, None)) as server:
        assert talk(server.port, client_context(kept)) == "hello site kept\n"
        assert server.next_outcome()[0] == "ok"
        assert not talk(server.port, client_context(gone)).startswith("hello")
        status, detail = server.next_outcome()
        assert status == "handshake" and "certificate revoked" in str(detail)
