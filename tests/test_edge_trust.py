"""Trust on every hop of an edge deployment, over real TLS on 127.0.0.1: the server's and the
relays' ``/sync``, the LCPs' device routes, ``/stats``/``/status`` and ``/health``, each
called with no credential, a forged one (another CA's, same name), an expired one, a revoked
one (refused at its very next request) and one of the wrong kind; the proxy checks that it
reached the LCP it meant; operator tokens."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from edge_rig import NUMERIC, TREE, ThreadedDeployment, provision
from waiting import free_port, wait_until

from redfl.edge.forward import ForwardError, LcpConnections
from redfl.edge.jobs import JobSpec
from redfl.edge.peers import Peers
from redfl.edge.provision import Member
from redfl.edge.routes import DEVICE_HEADER
from redfl.trust import Bundle, TrustHome, UntrustedError
from redfl.trust.layout import register_path
from redfl.trust.operator import OPERATOR_HEADER, operator_token

SPEC = JobSpec(name="job", client=NUMERIC, options={"num_parameters": 4}, num_updates_for_model=100)
SYNC_AS = {"lcp-1-1": {"sender": "lcp-1-1", "boot": "t", "seq": 0}}

# endpoint -> (service, method, path, body, the good caller)
ENDPOINTS: dict[str, tuple[str, str, str, dict[str, Any] | None, str]] = {
    "server /sync": ("server", "POST", "/sync", SYNC_AS["lcp-1-1"], "lcp-1-1"),
    "relay /sync": ("relay-1", "POST", "/sync", SYNC_AS["lcp-1-1"], "lcp-1-1"),
    "lcp /task": ("lcp-1-1", "POST", "/task", {"job_id": "none"}, "proxy"),
    "lcp /result": ("lcp-1-1", "POST", "/result", None, "proxy"),
    "server /status": ("server", "GET", "/status", None, "operator"),
    "server GET /jobs": ("server", "GET", "/jobs", None, "operator"),
    "server GET /jobs/ID": ("server", "GET", "/jobs/none", None, "operator"),
    "server POST /jobs": ("server", "POST", "/jobs", {"job": {"name": "x"}}, "operator"),
    "server /jobs/abort": ("server", "POST", "/jobs/abort", {"job_id": "none"}, "operator"),
    "relay /stats": ("relay-1", "GET", "/stats", None, "operator"),
    "lcp /stats": ("lcp-1-1", "GET", "/stats", None, "operator"),
    "server /health": ("server", "GET", "/health", None, "lcp-1-1"),
    "lcp /health": ("lcp-1-1", "GET", "/health", None, "proxy"),
    "relay /health": ("relay-1", "GET", "/health", None, "operator"),
}
TLS_REFUSED = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError)


class Creds:
    """The tree's own credentials, and forged and expired ones for the same names."""

    def __init__(self, folder: Path, scratch: Path) -> None:
        self.folder = folder
        self.home = TrustHome(folder / "trust")
        foreign = TrustHome.init(scratch / "foreign")
        self.forged = {n: foreign.issue(n, k) for n, k in _KINDS.items()}
        past = datetime.now(UTC) - timedelta(days=3)
        self.expired = {
            n: self.home.issue(f"{n}-late", k, days=1, valid_from=past) for n, k in _KINDS.items()
        }
        self.spare = {n: self.home.issue(f"{n}-2", k) for n, k in _KINDS.items() if k != "lcp"}
        self.scratch = scratch

    def own(self, name: str) -> Bundle:
        return Member.load(self.folder, name).bundle

    def context(self, bundle: Bundle | None) -> ssl.SSLContext:
        """Trusts the tree's CA (the real services are reached) and presents ``bundle``."""
        context = ssl.create_default_context(cadata=self.home.ca_pem)
        if bundle is not None:
            chain = Path(tempfile.mkdtemp(dir=self.scratch)) / "chain.pem"
            chain.write_text(bundle.key_pem + bundle.cert_pem)
            context.load_cert_chain(chain)
        return context


_KINDS = {"lcp-1-1": "lcp", "proxy": "proxy", "operator": "operator"}


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Creds:
    scratch = tmp_path_factory.mktemp("scratch")
    return Creds(provision(tmp_path_factory.mktemp("tree")), scratch)


@pytest.fixture(scope="module")
def edge(creds: Creds) -> Iterator[ThreadedDeployment]:
    deployment = ThreadedDeployment(
        SPEC, ["lcp-1-1", "lcp-2-1"], creds.folder, relays=True, proxy_tls=True
    )
    yield deployment
    deployment.close()


def call(
    edge: ThreadedDeployment, endpoint: str, context: ssl.SSLContext, **headers: str
) -> httpx.Response:
    service, method, path, body, _ = ENDPOINTS[endpoint]
    if service.startswith("lcp"):
        headers = {DEVICE_HEADER: "d1", **headers}
    with httpx.Client(verify=context, timeout=10.0) as client:
        return client.request(method, f"{edge.url[service]}{path}", json=body, headers=headers)


def good_caller(creds: Creds, endpoint: str) -> Bundle:
    return creds.own(ENDPOINTS[endpoint][4])


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_each_endpoint_answers_its_own_caller(
    edge: ThreadedDeployment, creds: Creds, endpoint: str
) -> None:
    reply = call(edge, endpoint, creds.context(good_caller(creds, endpoint)))
    # past authentication: no body (400), a job without its class (400), no such job (404)
    expected = {
        "lcp /result": 400,
        "server POST /jobs": 400,
        "server GET /jobs/ID": 404,
        "server /jobs/abort": 404,
    }.get(endpoint, 200)
    assert reply.status_code == expected, reply.text


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_no_forged_or_expired_certificate_gets_past_the_handshake(
    edge: ThreadedDeployment, creds: Creds, endpoint: str
) -> None:
    name = ENDPOINTS[endpoint][4]
    kind_of = {"lcp-1-1": "lcp-1-1", "proxy": "proxy", "operator": "operator"}
    for bundle in (None, creds.forged[kind_of[name]], creds.expired[kind_of[name]]):
        with pytest.raises(TLS_REFUSED):  # the handshake fails: the app never sees it
            call(edge, endpoint, creds.context(bundle))


@pytest.mark.parametrize(
    ("endpoint", "caller", "reason"),
    [
        ("server /sync", "operator", "operator 'operator': kind 'operator' is not accepted here"),
        ("server /sync", "lcp-2-1", "lcp-2-1 may not sync for lcp-1-1: an LCP syncs for itself"),
        ("relay /sync", "lcp-2-1", "lcp 'lcp-2-1' is not a member this endpoint expects"),
        ("lcp /task", "operator", "operator 'operator': kind 'operator' is not accepted here"),
        ("lcp /task", "lcp-2-1", "lcp 'lcp-2-1': kind 'lcp' is not accepted here"),
        ("lcp /stats", "proxy", "proxy 'proxy': kind 'proxy' is not accepted here"),
        ("server /status", "lcp-1-1", "lcp 'lcp-1-1': kind 'lcp' is not accepted here"),
        ("server POST /jobs", "lcp-1-1", "lcp 'lcp-1-1': kind 'lcp' is not accepted here"),
        ("server /jobs/abort", "proxy", "proxy 'proxy': kind 'proxy' is not accepted here"),
        ("server GET /jobs", "lcp-1-1", "lcp 'lcp-1-1': kind 'lcp' is not accepted here"),
    ],
)
def test_a_member_of_another_kind_or_place_is_refused_naming_why(
    edge: ThreadedDeployment, creds: Creds, endpoint: str, caller: str, reason: str
) -> None:
    reply = call(edge, endpoint, creds.context(creds.own(caller)))
    assert reply.status_code in (401, 403), reply.text
    assert reply.json()["status"] == "ERROR" and reply.json()["reason"].startswith(reason)


def test_the_lcp_takes_no_device_header_without_the_proxys_certificate(
    edge: ThreadedDeployment, creds: Creds
) -> None:
    # an operator's (valid) certificate with a device header: the header is not trusted
    reply = call(edge, "lcp /task", creds.context(creds.own("operator")))
    assert reply.status_code == 401
    # the proxy's certificate without the header: no device
    with httpx.Client(verify=creds.context(creds.own("proxy"))) as client:
        bare = client.post(f"{edge.url['lcp-1-1']}/task", json={"job_id": "none"})
    assert bare.status_code == 401
    assert (
        bare.json()["reason"] == "no device identity: the proxy names the device in x-redfl-device"
    )


def test_operator_tokens_no_forged_expired_or_of_another_kind(
    edge: ThreadedDeployment, creds: Creds
) -> None:
    url = f"{edge.url['proxy']}/stats"  # a device's TLS (no client certificate): a token

    def stats(**headers: str) -> httpx.Response:
        with edge.client() as client:
            return client.get(url, headers=headers)

    good = stats(**{OPERATOR_HEADER: operator_token(creds.own("operator"))})
    assert good.status_code == 200 and set(good.json()["up"]) == {"lcp-1-1", "lcp-2-1"}
    none = stats()
    assert none.status_code == 401 and none.json()["reason"].startswith("no operator credential")
    forged = stats(**{OPERATOR_HEADER: operator_token(creds.forged["operator"])})
    assert forged.status_code == 401 and "is not signed by this CA" in forged.json()["reason"]
    old = operator_token(creds.own("operator"), ttl=60, clock=lambda: 1_000_000.0)
    expired = stats(**{OPERATOR_HEADER: old})
    assert expired.status_code == 401 and expired.json()["reason"] == "operator token expired"
    late = stats(**{OPERATOR_HEADER: operator_token(creds.expired["operator"])})
    assert late.status_code == 401 and "the certificate expired at" in late.json()["reason"]
    with pytest.raises(ValueError, match="needs an operator bundle"):
        operator_token(creds.own("proxy"))
    tampered = operator_token(creds.own("operator"))[:-4] + "AAAA"
    bad = stats(**{OPERATOR_HEADER: tampered})
    assert bad.status_code == 401 and bad.json()["reason"] == "operator token: bad signature"


def test_a_revoked_credential_is_refused_at_its_next_request(
    edge: ThreadedDeployment, creds: Creds
) -> None:
    lcp = creds.own("lcp-1-2")  # a provisioned LCP that does not run here
    as_lcp = {"sender": "lcp-1-2", "boot": "t", "seq": 0}
    with httpx.Client(verify=creds.context(lcp)) as client:
        for service in ("server", "relay-1"):
            assert client.post(f"{edge.url[service]}/sync", json=as_lcp).status_code == 200
    proxy, operator = creds.spare["proxy"], creds.spare["operator"]
    assert call(edge, "lcp /task", creds.context(proxy)).status_code == 200
    assert call(edge, "server /status", creds.context(operator)).status_code == 200
    token = operator_token(operator)
    url = f"{edge.url['proxy']}/stats"
    with edge.client() as client:
        assert client.get(url, headers={OPERATOR_HEADER: token}).status_code == 200
    with httpx.Client(verify=creds.context(operator)) as client:  # its certificate, on TLS
        assert client.get(url).status_code == 200
    for name in ("lcp-1-2", "proxy-2", "operator-2"):
        creds.home.revoke(name, "laptop stolen")
    with httpx.Client(verify=creds.context(lcp)) as client:  # a new connection, same cert
        for service in ("server", "relay-1"):
            refused = client.post(f"{edge.url[service]}/sync", json=as_lcp)
            assert refused.status_code == 401
            assert "lcp 'lcp-1-2'" in refused.json()["reason"]
            assert refused.json()["reason"].endswith("laptop stolen")
    jobs = ("server GET /jobs", "server POST /jobs", "server /jobs/abort")
    for endpoint, bundle in (
        ("lcp /task", proxy),
        ("server /status", operator),
        *((e, operator) for e in jobs),
    ):
        refused = call(edge, endpoint, creds.context(bundle))
        assert refused.status_code == 401 and "was revoked at" in refused.json()["reason"]
    with edge.client() as client:
        refused = client.get(url, headers={OPERATOR_HEADER: token})  # a token made before
    assert refused.status_code == 401 and "was revoked at" in refused.json()["reason"]
    with httpx.Client(verify=creds.context(operator)) as client:
        refused = client.get(url)
    assert refused.status_code == 401 and "was revoked at" in refused.json()["reason"]
    # the running deployment's own members are untouched
    reply = call(edge, "server /sync", creds.context(creds.own("lcp-1-1")))
    assert reply.status_code == 200


def test_an_update_crosses_every_hop_and_is_folded(edge: ThreadedDeployment) -> None:
    # device --TLS--> proxy --mTLS--> LCP --mTLS--> relay --mTLS--> server, and back
    headers = edge.token("walker")
    base = edge.url["proxy"]
    job_id = edge.job.job_id
    accepted = edge.job.fedbuff.accepted
    with edge.client() as client:
        task: dict[str, Any] = {}

        def selected() -> bool:
            task.update(
                client.post(f"{base}/task", json={"job_id": job_id}, headers=headers).json()
            )
            return bool(task["status"] == "OK")

        assert wait_until(selected, 20), task
        body = {"job_id": job_id, "task_id": task["task_id"], "parameters": task["parameters"]}
        reply = client.post(f"{base}/result", json=body, headers=headers)
    assert reply.json() == {"status": "OK", "reason": ""}
    assert edge.job.fedbuff.accepted == accepted + 1
    relay = TREE.site(task["task_id"].split(".")[0]).relay
    with httpx.Client(verify=edge.member["operator"].client_tls()) as client:
        stats = client.get(f"{edge.url[relay or '']}/stats").json()
    assert stats["syncs"] > 0  # the LCP's syncs went through its relay


def test_the_proxy_checks_it_reached_the_lcp_it_meant(creds: Creds) -> None:
    # a TLS service that presents lcp-2-2's (valid) certificate where lcp-1-1 should be
    impostor = Member.load(creds.folder, "lcp-2-2")
    proxy = Member.load(creds.folder, "proxy")

    async def scenario() -> str:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                await reader.readuntil(b"\r\n\r\n")  # the proxy hangs up before asking
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            writer.close()

        port = free_port()
        server = await asyncio.start_server(answer, "127.0.0.1", port, ssl=impostor.server_tls())
        expect = proxy.peers.acceptor({"lcp": ("lcp-1-1",)})
        pool = LcpConnections("127.0.0.1", port, ssl=proxy.client_tls(), expect=expect)
        try:
            await pool.post("/job", b"{}", {})
        except ForwardError as exc:
            return str(exc)
        finally:
            server.close()
        return "forwarded"

    outcome = asyncio.run(scenario())
    assert "is not the member expected" in outcome
    assert "lcp 'lcp-2-2' is not a member this endpoint expects" in outcome


def test_peers_see_revocation_and_expiry_from_the_register(tmp_path: Path) -> None:
    folder = provision(tmp_path / "tree")
    bundle = Member.load(folder, "lcp-1-1").bundle
    now = [datetime.now(UTC).timestamp()]
    peers = Peers(bundle.ca_pem, register_path(folder), clock=lambda: now[0])
    assert peers.identity(bundle.cert_pem).name == "lcp-1-1"
    assert peers.identity(bundle.cert_pem).name == "lcp-1-1"  # remembered
    now[0] += 400 * 86_400  # past the certificate's year: refused though remembered
    with pytest.raises(UntrustedError, match="the certificate expired at"):
        peers.identity(bundle.cert_pem)
    now[0] -= 400 * 86_400
    TrustHome(folder / "trust").revoke("lcp-1-1", "decommissioned")
    with pytest.raises(UntrustedError, match=r"was revoked at .*: decommissioned"):
        peers.identity(bundle.cert_pem)
    register_path(folder).unlink()  # fails closed
    with pytest.raises(UntrustedError, match="the register cannot be read, refusing everyone"):
        peers.identity(bundle.cert_pem)
