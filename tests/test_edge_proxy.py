"""The routing proxy over real sockets (its LCPs and the server over mutual TLS): enrolment,
tokens, routing, failover, errors."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from edge_rig import ThreadedDeployment, provision, wait_until

from redfl.edge.hashing import choose
from redfl.edge.jobs import JobSpec
from redfl.edge.protocol import encode_arrays
from redfl.edge.tokens import TokenSigner

SPEC = JobSpec(name="job", task="numeric", num_parameters=4, num_updates_for_model=100)
LCPS = ["lcp-1-1", "lcp-1-2", "lcp-2-1"]


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedDeployment]:
    deployment = ThreadedDeployment(SPEC, LCPS, provision(tmp_path_factory.mktemp("tree")))
    yield deployment
    deployment.close()


def post(edge: ThreadedDeployment, path: str, body: object, device: str = "") -> httpx.Response:
    headers = edge.token(device) if device else {}
    return httpx.post(f"{edge.url['proxy']}{path}", json=body, headers=headers)


def test_enrolment_and_tokens(edge: ThreadedDeployment) -> None:
    bad = post(edge, "/enroll", {"device_id": "d1", "secret": "wrong-secret"})
    assert bad.status_code == 401 and bad.json() == {
        "status": "ERROR",
        "reason": "bad enrollment secret",
    }
    missing = post(edge, "/job", {"job_name": "job"})
    assert missing.status_code == 401 and missing.json()["reason"].startswith("missing token")
    forged, _ = TokenSigner(b"x" * 32).issue("d1")
    wrong = httpx.post(
        f"{edge.url['proxy']}/job",
        json={"job_name": "job"},
        headers={"authorization": f"Bearer {forged}"},
    )
    assert wrong.status_code == 401 and wrong.json()["reason"] == "bad signature"
    expired = TokenSigner(b"k" * 32, ttl=1.0, clock=lambda: 0.0).issue("d1")[0]
    old = httpx.post(
        f"{edge.url['proxy']}/job",
        json={"job_name": "job"},
        headers={"authorization": f"Bearer {expired}"},
    )
    assert old.status_code == 401 and old.json()["reason"] == "token expired"
    ok = post(edge, "/job", {"job_name": "job"}, device="d1")
    assert ok.status_code == 200 and ok.json()["job_id"] == edge.server.job_id


def test_malformed_bodies_get_400(edge: ThreadedDeployment) -> None:
    headers = {**edge.token("d1"), "content-type": "application/json"}
    for body in (b"{not json", b"[]", b'{"job_name": ""}', b'{"job_name": "job", "x": 1}'):
        reply = httpx.post(f"{edge.url['proxy']}/job", content=body, headers=headers)
        assert reply.status_code == 400, body
        assert reply.json()["status"] == "INVALID_REQUEST" and reply.json()["reason"]
    empty = httpx.post(f"{edge.url['proxy']}/job", json={"job_name": ""}, headers=headers)
    assert empty.json()["reason"] == "job_name: String should have at least 1 character"
    no_token = httpx.post(f"{edge.url['proxy']}/job", content=b"{not json")
    assert no_token.status_code == 401  # the token is checked before the body
    enroll = httpx.post(f"{edge.url['proxy']}/enroll", json={"secret": "s"})  # no token needed
    assert enroll.status_code == 400 and enroll.json() == {
        "status": "INVALID_REQUEST",
        "reason": "device_id: Field required",
    }


def test_the_device_id_comes_from_the_token_only(edge: ThreadedDeployment) -> None:
    job_id = edge.server.job_id
    alice = {**edge.token("alice"), "x-redfl-device": "mallory"}  # a forged identity header
    tasks: list[dict[str, object]] = []

    def ask() -> bool:
        reply = httpx.post(f"{edge.url['proxy']}/task", json={"job_id": job_id}, headers=alice)
        tasks.append(reply.json())
        return bool(reply.json()["status"] == "OK")

    wait_until(ask, what="alice selected")
    body = {
        "job_id": job_id,
        "task_id": tasks[-1]["task_id"],
        "parameters": encode_arrays({"value": np.ones(4)}),
    }
    url = f"{edge.url['proxy']}/result"
    stolen = httpx.post(url, json=body, headers=edge.token("mallory")).json()
    assert stolen["status"] == "ERROR" and "not issued to this device" in stolen["reason"]
    accepted = edge.server.fedbuff.accepted
    assert httpx.post(url, json=body, headers=alice).json() == {"status": "OK", "reason": ""}
    assert edge.server.fedbuff.accepted == accepted + 1


def test_a_device_fails_over_and_comes_home(edge: ThreadedDeployment) -> None:
    device = "wanderer"
    home, second = choose(device, LCPS)[:2]
    router = edge.proxy.state.router
    headers = edge.token(device)

    def job() -> httpx.Response:
        return httpx.post(f"{edge.url['proxy']}/job", json={"job_name": "job"}, headers=headers)

    before = dict(router.forwards)
    assert job().json()["status"] == "OK"
    assert router.forwards[home] == before.get(home, 0) + 1
    edge.stop(home)
    failovers = router.failovers
    assert job().json()["status"] == "OK"  # re-routed at once, no error seen by the device
    assert router.failovers == failovers + 1 and router.forwards[second] >= 1
    wait_until(lambda: not router.up[home], what="health check marks the LCP down")
    count = router.forwards[second]
    assert job().json()["status"] == "OK" and router.forwards[second] == count + 1
    edge.start_lcp(home)
    wait_until(lambda: router.up[home], what="health check marks the LCP up again")
    count = router.forwards[home]
    assert job().json()["status"] == "OK" and router.forwards[home] == count + 1  # home again


def test_openapi_schema_lists_the_device_routes(edge: ThreadedDeployment) -> None:
    schema = httpx.get(f"{edge.url['proxy']}/openapi.json").json()
    assert {"/enroll", "/job", "/task", "/result", "/selection"} <= set(schema["paths"])
    result = schema["paths"]["/result"]["post"]
    assert set(result["responses"]) == {"200", "400", "401", "413"}  # never 422
    body = result["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ResultRequest"}
    reply = result["responses"]["200"]["content"]["application/json"]["schema"]
    assert reply == {"$ref": "#/components/schemas/ResultReply"}
    assert result["security"] == [{"HTTPBearer": []}]
    enroll = schema["paths"]["/enroll"]["post"]
    assert "security" not in enroll and enroll["responses"]["401"]["description"] == (
        "Enrolment closed, a bad credential, an id bound to another, or revoked"
    )
    assert enroll["responses"]["413"]["description"] == "A body over 8,192 bytes (not read)"
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_another_method_on_a_device_route_gets_405(edge: ThreadedDeployment) -> None:
    reply = httpx.get(f"{edge.url['proxy']}/task", headers=edge.token("d1"))
    assert reply.status_code == 405 and reply.headers["allow"] == "POST"
    assert reply.json() == {"status": "ERROR", "reason": "method GET not allowed: /task takes POST"}
