"""Every endpoint of the sites server knows who calls it: real mutual TLS on 127.0.0.1 with
no credential, a forged one (another CA), an expired one and a revoked one, and valid ones of
an unexpected name or kind. Each is refused at the TLS handshake or at its first request,
with the reason logged on the server; a revocation is seen by the very next request of a
site that is already connected."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sites_rig import RawSite, credential, expired, forged, serve, tls_context
from waiting import wait_until

from redfl.core.instructions import Instructions
from redfl.runtime.sites.backend import SitesBackend
from redfl.runtime.sites.service import Peers
from redfl.runtime.sites.wire import FitReply, read_task, reply_frame
from redfl.runtime.star_runner import FitSegments
from redfl.trust import Bundle, Identity, TrustHome, UntrustedError, Verifier

NAMES = ["a", "b"]
ENDPOINTS = [("POST", "/v1/join"), ("GET", "/v1/work"), ("POST", "/v1/reply")]


@dataclass
class Served:
    home: TrustHome
    port: int
    backend: SitesBackend
    folder: Path

    def bundle(self, name: str) -> Bundle:
        return Bundle.load(credential(self.home, name, self.port, self.folder / f"{name}.json"))

    def site(self, bundle: Bundle | None) -> RawSite:
        return RawSite(self.port, tls_context(self.home, bundle))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    home = TrustHome.init(tmp_path / "home")
    backend, port = serve(home, NAMES)
    try:
        yield Served(home, port, backend, tmp_path)
    finally:
        backend.stop()


def call(site: RawSite, method: str, path: str) -> httpx.Response:
    with site.client() as http:
        return http.request(method, path, headers=site.headers("job-1"), content=b"")


def test_a_valid_site_joins_gets_its_own_work_and_answers_it(served: Served) -> None:
    site = served.site(served.bundle("b"))
    assert site.join().status_code == 200
    parameters = {"w": np.zeros(4, np.float32)}
    pending = served.backend.call(1, FitSegments(parameters, [["b"]], Instructions.make(1), True))
    task = site.poll()
    assert task.status_code == 200 and task.headers["content-type"] == "application/octet-stream"
    work = read_task(task.content)
    assert work.node_id == "b" and work.instructions.round == 1
    answer = site.reply(work.job, reply_frame(FitReply(work.job, True, parameters, 2)))
    assert answer.status_code == 200
    assert served.backend.gather([pending])[0].result().succeeded == ["b"]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("none", "peer did not return a certificate"),
        ("forged", "certificate verify failed: unable to get local issuer certificate"),
        ("expired", "certificate verify failed: certificate has expired"),
    ],
)
def test_no_forged_or_expired_credential_is_refused_at_the_handshake_and_logged(
    served: Served,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    reason: str,
    method: str,
    path: str,
) -> None:
    bundle = {
        "none": None,
        "forged": forged("a", served.port),
        "expired": Bundle.load(expired(served.home, "a", served.port, served.folder / "x.json")),
    }[kind]
    caplog.set_level(logging.WARNING, logger="redfl.sites")
    with pytest.raises(httpx.TransportError):
        call(served.site(bundle), method, path)
    pattern = rf"TLS handshake from 127\.0\.0\.1:\d+ refused: {re.escape(reason)}"
    assert wait_until(lambda: re.search(pattern, caplog.text) is not None, 10), caplog.text
    assert served.backend.states()[0].address == ""  # nothing reached the app


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_a_revoked_credential_is_refused_at_its_first_request_and_logged(
    served: Served, caplog: pytest.LogCaptureFixture, method: str, path: str
) -> None:
    bundle = served.bundle("a")
    served.home.revoke("a", "laptop lost")
    caplog.set_level(logging.WARNING, logger="redfl.sites")
    response = call(served.site(bundle), method, path)
    assert response.status_code == 403
    assert re.fullmatch(
        r"refused: site 'a' \(serial [0-9a-f]+\) was revoked at .*: laptop lost",
        response.json()["error"],
    )
    assert f"refused {method} {path} from 127.0.0.1:" in caplog.text
    assert "laptop lost" in caplog.text


@pytest.mark.parametrize(
    ("name", "kind", "reason"),
    [
        ("zed", "site", "name 'zed' is not expected here"),
        ("a", "operator", "kind 'operator' is not accepted here (accepted: site)"),
    ],
)
def test_a_valid_credential_of_another_name_or_kind_is_refused(
    served: Served, caplog: pytest.LogCaptureFixture, name: str, kind: str, reason: str
) -> None:
    bundle = served.home.issue(name, kind)
    caplog.set_level(logging.WARNING, logger="redfl.sites")
    for method, path in ENDPOINTS:
        response = call(served.site(bundle), method, path)
        assert response.status_code == 403 and response.json()["error"].endswith(reason)
    assert caplog.text.count(reason) == len(ENDPOINTS)


def test_a_site_revoked_mid_run_is_refused_at_its_next_request(served: Served) -> None:
    site = served.site(served.bundle("a"))
    assert site.join().status_code == 200
    parameters = {"w": np.zeros(4, np.float32)}
    served.backend.call(0, FitSegments(parameters, [["a"]], Instructions.make(1), True))
    assert site.poll().status_code == 200
    served.home.revoke("a", "left the consortium")
    refused = site.poll()
    assert refused.status_code == 403 and "left the consortium" in refused.json()["error"]
    assert site.reply("any", b"").status_code == 403


def test_a_session_belongs_to_its_site_and_a_job_to_the_site_it_was_given_to(
    served: Served,
) -> None:
    a, b = served.site(served.bundle("a")), served.site(served.bundle("b"))
    assert a.join().status_code == 200 and b.join().status_code == 200
    parameters = {"w": np.zeros(4, np.float32)}
    served.backend.call(0, FitSegments(parameters, [["a"]], Instructions.make(1), True))
    job_id = read_task(a.poll().content).job
    thief = RawSite(served.port, b.context, a.session)  # b's certificate, a's token
    assert thief.poll().status_code == 404
    other = b.reply(job_id, b"x")  # b's own session, a's job
    assert other.status_code == 409
    assert f"job {job_id!r} is not awaited from site 'b'" in other.json()["error"]
    assert served.backend.states()[0].failures == 0  # a's job still waits for a


class Counting(Verifier):
    """A verifier that counts its full checks."""

    calls = 0

    def identity(self, peer_cert_der: bytes) -> Identity:
        self.calls += 1
        return super().identity(peer_cert_der)


def test_a_remembered_certificate_is_checked_again_once_the_register_changes(
    tmp_path: Path,
) -> None:
    home = TrustHome.init(tmp_path / "home")
    der = x509.load_pem_x509_certificate(home.issue("a", "site").cert_pem.encode()).public_bytes(
        serialization.Encoding.DER
    )
    verifier = Counting(home.ca_pem, home.register_path, kinds=["site"], names=["a", "b"])
    peers = Peers(verifier, home.register_path)
    assert peers.identity(der).name == "a" and peers.identity(der).name == "a"
    assert verifier.calls == 1  # the second request needed no full check
    home.issue("b", "site")  # any change of the register: a full check again
    assert peers.identity(der).name == "a" and verifier.calls == 2
    home.revoke("a", "stolen")
    with pytest.raises(UntrustedError, match=r"was revoked at .*: stolen"):
        peers.identity(der)
