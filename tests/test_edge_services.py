"""The LCP and server services in one process (ASGI transports, no sockets; each transport
presents its caller's certificate as a TLS connection would)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from edge_rig import NUMERIC, TREE, provision

from redfl.edge.job import EdgeJob
from redfl.edge.jobs import JobSpec
from redfl.edge.lcp import LcpService
from redfl.edge.lcp_app import lcp_app
from redfl.edge.protocol import FORWARDED_ROUTES, decode_arrays, encode_arrays
from redfl.edge.provision import Member
from redfl.edge.relay import RelayAggregator, RelayJob
from redfl.edge.routes import DEVICE_HEADER
from redfl.edge.server import EdgeServer, server_app
from redfl.edge.wire import (
    JobInfo,
    JobSync,
    Limits,
    PartialMsg,
    SyncRequest,
    VerdictMsg,
    speaks_for,
)

SPEC = JobSpec(
    name="numeric-job",
    client=NUMERIC,
    options={"num_parameters": 3},
    num_updates_for_model=2,
    max_model_version=3,
    max_model_history=1,
    device_selection_size=3,
    config={"lr": 0.5},
)
LCP = "lcp-1-1"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return provision(tmp_path_factory.mktemp("tree"))


def as_peer(app: Any, member: Member | None) -> Any:
    """``app`` as reached over a TLS connection on which ``member`` presented its certificate
    (the ASGI TLS extension the edge servers fill); ``None``: no certificate."""
    chain = [member.bundle.cert_pem] if member is not None else []

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "extensions": {"tls": {"client_cert_chain": chain}}}
        await app(scope, receive, send)

    return wrapped


def asgi_client(app: Any, member: Member | None, base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=as_peer(app, member)), base_url=base_url
    )


class Rig:
    """One server and one LCP wired through ASGI transports, the LCP's sync loop running."""

    def __init__(self, spec: JobSpec, folder: Path, jobs: Path) -> None:
        self.server = EdgeServer(jobs)
        self.job: EdgeJob = self.server.submit(spec)
        self.server_asgi = server_app(self.server, TREE, Member.load(folder, "server"))
        self.member = Member.load(folder, LCP)
        self.service = LcpService(LCP, "https://server", self.member, sync_interval=0.01)
        self.app = lcp_app(self.service)
        self.lcp = asgi_client(self.app, Member.load(folder, "proxy"), "https://lcp")

    async def post(self, path: str, device: str, body: dict[str, Any]) -> httpx.Response:
        return await self.lcp.post(path, json=body, headers={DEVICE_HEADER: device})

    async def until(self, check: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not check():
            assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
            await asyncio.sleep(0.005)

    async def task(self, device: str) -> dict[str, Any]:
        """Ask until selected; return the task reply."""
        job_id = self.job.job_id
        for _ in range(500):
            reply = (await self.post("/task", device, {"job_id": job_id})).json()
            if reply["status"] != "NO_TASK":
                return dict(reply)
            await asyncio.sleep(0.01)
        raise AssertionError(f"{device} was never selected")

    async def result(
        self, device: str, task_id: str, value: float = 1.0, **extra: Any
    ) -> dict[str, Any]:
        body = {
            "job_id": self.job.job_id,
            "task_id": task_id,
            "parameters": encode_arrays({"value": np.full(3, value, np.float32)}),
            **extra,
        }
        return dict((await self.post("/result", device, body)).json())


class AsgiPoster:
    """The LCP's sync client over an in-process ASGI transport."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        reply = await self.client.post(f"https://server{path}", content=body, headers=headers)
        return reply.status_code, reply.content


async def running(spec: JobSpec, folder: Path, jobs: Path) -> AsyncIterator[Rig]:
    rig = Rig(spec, folder, jobs)
    async with asgi_client(rig.server_asgi, rig.member, "https://server") as client:
        loop_task = asyncio.create_task(rig.service.run(AsgiPoster(client)))
        await rig.until(lambda: rig.job.job_id in rig.service.jobs)
        yield rig
        loop_task.cancel()
    await rig.lcp.aclose()


@pytest.fixture
async def rig(folder: Path, tmp_path: Path) -> AsyncIterator[Rig]:
    async for one in running(SPEC, folder, tmp_path / "jobs"):
        yield one


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


pytestmark = pytest.mark.anyio


async def test_job_task_result_and_new_versions(rig: Rig) -> None:
    job = (await rig.post("/job", "d1", {"job_name": "numeric-job"})).json()
    assert job == {
        "status": "OK",
        "reason": "",
        "job_id": rig.job.job_id,
        "client": NUMERIC,
        "options": {"num_parameters": 3},
        "seed": 0,
        "retry_wait": 0.0,
    }
    other = (await rig.post("/job", "d1", {"job_name": "nope"})).json()
    assert other["status"] == "NO_JOB"
    first = (await rig.post("/task", "d1", {"job_id": rig.job.job_id})).json()
    assert first["status"] == "NO_TASK" and first["retry_wait"] > 0  # not selected yet
    t1, t2 = await rig.task("d1"), await rig.task("d2")
    assert t1["status"] == "OK" and t1["model_version"] == 0 and t1["config"] == {"lr": 0.5}
    assert (await rig.task("d1"))["task_id"] == t1["task_id"]  # asking again: the same task
    r1, r2 = await asyncio.gather(
        rig.result("d1", t1["task_id"], 1.0), rig.result("d2", t2["task_id"], 3.0)
    )
    assert r1["status"] == r2["status"] == "OK"
    assert rig.job.fedbuff.version == 1
    np.testing.assert_allclose(rig.job.fedbuff.parameters["value"], 2.0)  # mean of 1 and 3
    status = rig.server.job_status(rig.job.job_id)
    assert status["accepted"] == 2 and status["history"][1]["version"] == 1


async def test_a_retried_result_counts_once(rig: Rig) -> None:
    t1 = await rig.task("d1")
    first, again = await asyncio.gather(
        rig.result("d1", t1["task_id"]), rig.result("d1", t1["task_id"])
    )
    later = await rig.result("d1", t1["task_id"])
    assert first == again == later == {"status": "OK", "reason": ""}
    assert rig.job.fedbuff.accepted == 1


async def test_a_device_cannot_report_for_another(rig: Rig) -> None:
    t1 = await rig.task("d1")
    stolen = await rig.result("d2", t1["task_id"])
    assert stolen["status"] == "ERROR"
    expected = f"not issued: task {t1['task_id']!r} was not issued to this device by lcp-1-1"
    assert stolen["reason"] == expected
    assert rig.job.fedbuff.accepted == 0


async def test_stale_updates_are_refused_with_the_reason(rig: Rig) -> None:
    old = await rig.task("d1")  # based on version 0
    for n in range(2):  # two versions pass (history is 1)
        a, b = await rig.task(f"a{n}"), await rig.task(f"b{n}")
        await asyncio.gather(rig.result(f"a{n}", a["task_id"]), rig.result(f"b{n}", b["task_id"]))
    assert rig.job.fedbuff.version == 2
    late = await rig.result("d1", old["task_id"])
    assert late["status"] == "ERROR" and late["reason"].startswith("stale: base version 0")
    assert rig.job.fedbuff.rejected["stale"] == 1


async def test_bad_requests_get_400_or_401(rig: Rig) -> None:
    job_id = rig.job.job_id
    no_device = await rig.lcp.post("/task", json={"job_id": job_id})
    assert no_device.status_code == 401 and no_device.json() == {
        "status": "ERROR",
        "reason": "no device identity: the proxy names the device in x-redfl-device",
    }
    for body in (b"{", b'{"job_id": 5}', b'{"job_id": "j", "extra": 1}'):
        bad = await rig.lcp.post("/task", content=body, headers={DEVICE_HEADER: "d1"})
        assert bad.status_code == 400 and bad.json()["status"] == "INVALID_REQUEST"
    assert "job_id" in bad.json()["reason"] or "extra" in bad.json()["reason"]
    t1 = await rig.task("d1")
    wrong = {"job_id": job_id, "task_id": t1["task_id"]}
    shape = await rig.post(
        "/result", "d1", {**wrong, "parameters": encode_arrays({"value": np.ones(4)})}
    )
    assert shape.status_code == 400 and "model's arrays" in shape.json()["reason"]
    junk = await rig.post("/result", "d1", {**wrong, "parameters": base64.b64encode(b"x").decode()})
    assert junk.status_code == 400 and "safetensors" in junk.json()["reason"]


async def test_job_done_tells_devices(rig: Rig) -> None:
    for n in range(3):
        a, b = await rig.task(f"a{n}"), await rig.task(f"b{n}")
        await asyncio.gather(rig.result(f"a{n}", a["task_id"]), rig.result(f"b{n}", b["task_id"]))
    await rig.until(lambda: not rig.service.jobs[rig.job.job_id].running)
    done = (await rig.post("/task", "z", {"job_id": rig.job.job_id})).json()
    assert done["status"] == "DONE" and done["model_version"] == 3
    selection = (await rig.post("/selection", "z", {"job_id": rig.job.job_id})).json()
    assert selection["done"] is True and selection["model_version"] == 3


def server_with(spec: JobSpec, jobs: Path, **kwargs: Any) -> tuple[EdgeServer, EdgeJob]:
    server = EdgeServer(jobs, **kwargs)
    return server, server.submit(spec)


def sync(job: EdgeJob, sender: str, seq: int, **part: Any) -> SyncRequest:
    return SyncRequest(sender=sender, boot="b", seq=seq, jobs={job.job_id: JobSync(**part)})


def test_a_repeated_sync_is_not_folded_twice(tmp_path: Path) -> None:
    server, job = server_with(SPEC, tmp_path)
    partial = PartialMsg(
        base_version=0,
        sums=encode_arrays({"value": np.ones(3)}, np.float64),
        weight=1.0,
        task_ids=["a.b.1"],
        devices=["d1"],
    )
    request = sync(job, "a", 0, partials=[partial])
    [first] = server.sync(request).jobs
    [again] = server.sync(request).jobs
    assert first.verdicts == again.verdicts and first.verdicts[0].accepted
    assert job.fedbuff.accepted == 1
    [other] = server.sync(request.model_copy(update={"seq": 1})).jobs
    assert other.verdicts[0].accepted and other.verdicts[0].reason == "already folded"
    assert job.fedbuff.accepted == 1
    [foreign] = server.sync(request.model_copy(update={"sender": "c"})).jobs
    assert foreign.verdicts[0].reason == "not its tasks: 'a.b.1' was not issued below the sender"


def test_a_silent_device_is_evicted_by_the_server(tmp_path: Path) -> None:
    now = [0.0]
    spec = SPEC.model_copy(update={"device_timeout": 5.0, "device_selection_size": 2})
    server, job = server_with(spec, tmp_path, clock=lambda: now[0])
    [state] = server.sync(sync(job, "a", 0, offered={"a": ["d1", "d2", "d3"]})).jobs
    assert state.selected == {"a": ["d1", "d2"]}
    now[0] = 6.0
    epochs = state.selection_epochs
    [state] = server.sync(sync(job, "a", 1, known_version=0, selection_epochs=epochs)).jobs
    assert state.selected == {"a": ["d3"]} and job.selector.evicted == 2


async def test_sync_refuses_a_malformed_body_with_the_field(folder: Path, tmp_path: Path) -> None:
    server, job = server_with(SPEC, tmp_path)
    app = server_app(server, TREE, Member.load(folder, "server"))
    async with asgi_client(app, Member.load(folder, LCP), "https://server") as client:
        bad = await client.post("/sync", json={"sender": LCP, "boot": "b", "seq": "x"})
        assert bad.status_code == 400 and bad.json() == {
            "status": "INVALID_REQUEST",
            "reason": "seq: Input should be a valid integer, unable to parse string as an integer",
        }
        good = await client.post("/sync", json={"sender": LCP, "boot": "b", "seq": 0})
    [state] = good.json()["jobs"]
    assert good.status_code == 200 and state["info"]["name"] == "numeric-job"
    assert state["info"]["limits"] == {"max_samples_per_update": 1000, "clip_norm": None}
    assert state["info"]["client"] == NUMERIC and state["job_id"] == job.job_id


def test_the_lcp_serves_and_describes_every_route_the_proxy_forwards(
    folder: Path, tmp_path: Path
) -> None:
    service = LcpService(LCP, "https://server", Member.load(folder, LCP))
    schema = lcp_app(service).openapi()
    for path, (request, reply) in FORWARDED_ROUTES.items():
        operation = schema["paths"][path]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{request.__name__}"}, path
        answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer == {"$ref": f"#/components/schemas/{reply.__name__}"}, path
        assert set(operation["responses"]) == {"200", "400", "401", "413"}, path
        assert operation["security"] == [{"APIKeyHeader": []}], path
    server = EdgeServer(tmp_path)
    sync = server_app(server, TREE, Member.load(folder, "server")).openapi()["paths"]["/sync"]
    responses = sync["post"]["responses"]
    assert set(responses) == {"200", "400", "401", "403", "413"}
    assert responses["413"]["description"] == "A body over 536,870,912 bytes (not read)"


async def test_one_device_can_neither_outweigh_nor_overpower_the_others(
    folder: Path, tmp_path: Path
) -> None:
    # d1 claims 2**31 samples and sends an update of norm sqrt(3): it counts as 10 samples
    # and is scaled to norm 1; d2's update (norm 0.87, 10 samples) is folded as it is
    spec = SPEC.model_copy(update={"max_samples_per_update": 10, "clip_norm": 1.0})
    async for rig in running(spec, folder, tmp_path):
        t1, t2 = await rig.task("d1"), await rig.task("d2")
        r1, r2 = await asyncio.gather(
            rig.result("d1", t1["task_id"], 1.0, num_samples=2**31),
            rig.result("d2", t2["task_id"], 0.5, num_samples=10),
        )
        assert r1["status"] == r2["status"] == "OK"
        assert rig.job.fedbuff.version == 1
        expected = (10 * (1 / np.sqrt(3)) + 10 * 0.5) / 20  # 0.539, not ~1.0 (d1's own value)
        np.testing.assert_allclose(rig.job.fedbuff.parameters["value"], expected, rtol=1e-6)
        assert (rig.service.capped, rig.service.clipped) == (1, 1)


def test_the_server_refuses_a_partial_sum_over_the_sample_cap(tmp_path: Path) -> None:
    server, job = server_with(SPEC.model_copy(update={"max_samples_per_update": 10}), tmp_path)
    sums = encode_arrays({"value": np.ones(3)}, np.float64)
    partial = PartialMsg(
        base_version=0, sums=sums, weight=21.0, task_ids=["a.b.1", "a.b.2"], devices=["d1", "d2"]
    )
    [state] = server.sync(sync(job, "a", 0, partials=[partial])).jobs
    [verdict] = state.verdicts
    assert not verdict.accepted
    assert verdict.reason == "over the cap: weight 21 for 2 updates (at most 20)"
    assert job.fedbuff.accepted == 0 and job.fedbuff.rejected["over the cap"] == 2


@pytest.mark.parametrize(
    ("caller", "lcp", "refusal"),
    [
        ("lcp-1-1", "lcp-1-1", ""),
        ("relay-1", "lcp-1-2", "relay-1 may not pass on a sync for lcp-1-2: it aggregates its"),
        ("relay-1", "lcp-2-1", "relay-1 may not sync for lcp-2-1: not an LCP below it"),
        ("relay-1", "relay-1", ""),  # an aggregating relay syncs its subtree's sums as itself
        ("lcp-2-2", "lcp-2-1", "lcp-2-2 may not sync for lcp-2-1: an LCP syncs for itself only"),
        ("agg-1", "lcp-1-1", "agg-1 (aggregator) may not sync: only LCPs and relays do"),
        ("stranger", "lcp-1-1", "stranger is not a site of this tree"),
    ],
)
def test_a_sync_speaks_only_for_its_caller_or_the_lcps_below_it(
    caller: str, lcp: str, refusal: str
) -> None:
    assert speaks_for(TREE, caller, lcp).startswith(refusal)
    assert bool(speaks_for(TREE, caller, lcp)) == bool(refusal)


def test_a_relay_sums_its_childrens_partial_sums_of_one_version_into_one() -> None:
    """Two LCPs' partial sums of the same base version, waiting at their relay together, go
    upstream as one partial sum (arrays, weights, task ids and devices summed), and each
    LCP gets the verdict on it; the first sync of a child the relay has not seen goes alone
    (it may repeat one whose answer was lost)."""
    relay = RelayAggregator("relay-1", TREE)
    view = RelayJob(
        JobInfo(job_id="j", name="j", client="m:C", limits=Limits(max_samples_per_update=9))
    )
    view.shapes = {"w": (3,)}
    relay.jobs["j"] = view
    relay.seen.update({"lcp-1-1", "lcp-1-2"})  # both synced before

    def sync(sender: str, value: float, weight: float) -> SyncRequest:
        arrays = encode_arrays({"w": np.full(3, value)}, np.float64)
        task = f"{sender}.boot.1"
        partial = PartialMsg(
            base_version=0, sums=arrays, weight=weight, task_ids=[task], devices=[f"d-{sender}"]
        )
        return SyncRequest(sender=sender, boot="b", seq=1, jobs={"j": JobSync(partials=[partial])})

    async def scenario() -> None:
        children = [
            asyncio.ensure_future(relay._take(sync("lcp-1-1", 1.0, 2.0))),
            asyncio.ensure_future(relay._take(sync("lcp-1-2", 2.5, 3.0))),
        ]
        for _ in range(100):  # let both reach their wait for the verdict
            if relay.partials_in == 2:
                break
            await asyncio.sleep(0)
        parts, context = relay.parts()
        [partial] = parts["j"].partials
        assert partial.base_version == 0 and partial.weight == 5.0
        assert sorted(partial.task_ids) == ["lcp-1-1.boot.1", "lcp-1-2.boot.1"]
        assert sorted(partial.devices) == ["d-lcp-1-1", "d-lcp-1-2"]
        np.testing.assert_array_equal(
            decode_arrays(partial.sums, dtype=np.float64)["w"], np.full(3, 3.5)
        )
        assert (relay.partials_in, relay.partials_out) == (2, 1)
        for group in context["j"]:
            for future in group:
                future.set_result(VerdictMsg(accepted=True))
        for child in children:
            assert await asyncio.wait_for(child, 5.0) == {"j": [VerdictMsg(accepted=True)]}
        # a child the relay has not seen since it started: its partial goes up alone
        relay.seen.discard("lcp-1-2")
        third = asyncio.ensure_future(relay._take(sync("lcp-1-2", 4.0, 1.0)))
        for _ in range(100):
            if relay.partials_in == 3:
                break
            await asyncio.sleep(0)
        parts, context = relay.parts()
        [alone] = parts["j"].partials
        assert alone.task_ids == ["lcp-1-2.boot.1"] and alone.weight == 1.0
        [[future]] = context["j"]
        future.set_result(VerdictMsg(accepted=False, reason="stale"))
        assert await asyncio.wait_for(third, 5.0) == {
            "j": [VerdictMsg(accepted=False, reason="stale")]
        }

    asyncio.run(scenario())
