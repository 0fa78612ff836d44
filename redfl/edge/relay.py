"""A relay: the hop between the LCPs of a subtree and the server, aggregating as the tree says.

A relay of the tree (``relay-1-2``) listens with mutual TLS and takes ``POST /sync`` from the
members just below it, and from no one else: the LCPs whose leaf relay it is and the relays
whose parent it is, each checked against the tree's register.

When the tree has aggregators (one per relay: LCPs report to their leaf relay's aggregator,
aggregators to their parent's), the relay plays its aggregator (:class:`RelayAggregator`): it
sums its children's partial sums per job and base version (a sum of sums is the same sum) and
syncs upstream once for all of them, as an LCP does, so the server's fan-in is the tree's
width, not the number of LCPs. A child's partial sum is checked first where it can be (its
task ids must be its subtree's, its weight within the job's cap, its arrays the model's);
one that fails is refused alone, with the reason, and never mixed with the others. A child's
sync is answered once upstream has ruled on the sum that holds its partial sums, with the
same verdict; a repeat of that sync (same sequence number) gets the same verdicts. The first
sync of a child since the relay started may repeat one whose answer the relay lost: its
partial sums go upstream on their own, where a repeat is recognised (its ids were folded) and
acknowledged again. The relay keeps what the job's LCPs need from the server (the job's
description, its recent parameters, each LCP's selection) and answers each child with its
share.

Without aggregators (``lcp_only``: LCPs report to the server), the relay passes the body of
each sync on, unchanged, and returns the answer: it carries messages across network
boundaries (an LCP's site may reach only its relay), and the sync must name an LCP below the
caller (:func:`redfl.edge.wire.speaks_for`).

Upstream is the parent relay or the server, over a kept-alive TLS connection made with the
relay's own credential. ``GET /stats`` (an operator) counts the syncs and the partial sums in
and out; ``GET /health`` answers any member of the tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI

from redfl.edge.errors import error_body
from redfl.edge.fastpath import serve_routes
from redfl.edge.forward import ForwardError, LcpConnections, Poster
from redfl.edge.protocol import Status, decode_arrays, encode_arrays
from redfl.edge.provision import Member
from redfl.edge.routes import Answer, Operator, PeerCertificate, Route, guard, ok
from redfl.edge.server import MAX_SYNC_BYTES
from redfl.edge.syncing import JobView, Sender
from redfl.edge.timing import Samples, summary
from redfl.edge.wire import (
    FailureMsg,
    JobInfo,
    JobState,
    JobSync,
    PartialMsg,
    SyncReply,
    SyncRequest,
    VerdictMsg,
    foreign_ids,
    speaks_for,
)
from redfl.topology.tree import RelayTree
from redfl.trust import KINDS

__all__ = ["RelayAggregator", "relay_app"]

_JSON = {"content-type": "application/json"}
Arrays = dict[str, np.ndarray]
Verdicts = dict[str, list[VerdictMsg]]  # job id -> the verdict of each partial sum


class RelayJob(JobView):
    """A relay's view of one job: also each LCP's selection below it."""

    def __init__(self, info: JobInfo) -> None:
        super().__init__(info)
        self.selected: dict[str, list[str]] = {}
        self.epochs: dict[str, int] = {}


@dataclass
class _Sum:
    """Children's partial sums of one job and base version, summed while they wait."""

    sums: Arrays
    weight: float = 0.0
    task_ids: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    futures: list[asyncio.Future[VerdictMsg]] = field(default_factory=list)


@dataclass
class _Outbox:
    """What waits to go upstream for one job."""

    sums: dict[int, _Sum] = field(default_factory=dict)
    alone: list[tuple[PartialMsg, asyncio.Future[VerdictMsg]]] = field(default_factory=list)
    offered: dict[str, set[str]] = field(default_factory=dict)
    failures: list[FailureMsg] = field(default_factory=list)


class RelayAggregator(Sender):
    """The aggregator a relay plays: children's syncs in, one sync upstream.

    Parameters
    ----------
    name : str
        The relay's site name.
    tree : RelayTree
        The tree (who is below the relay).
    sync_interval, max_idle : float
        As for an LCP (:class:`redfl.edge.syncing.Sender`).
    answer_timeout : float, default 20.0
        Seconds a child's sync waits for upstream's verdicts before it is told to retry.
    """

    def __init__(
        self,
        name: str,
        tree: RelayTree,
        sync_interval: float = 0.02,
        max_idle: float = 0.4,
        answer_timeout: float = 20.0,
    ) -> None:
        super().__init__(name, sync_interval, max_idle)
        self.tree = tree
        self.lcps = tuple(tree.lcps_under(name))
        self.answer_timeout = answer_timeout
        self.jobs: dict[str, RelayJob] = {}
        self.outbox: dict[str, _Outbox] = {}
        self.last: dict[str, tuple[str, int, Verdicts]] = {}  # child -> boot, seq, verdicts
        self.inflight: dict[str, tuple[str, int, asyncio.Task[Verdicts]]] = {}
        self.seen: set[str] = set()  # children synced since this relay started
        self.below: dict[str, frozenset[str]] = {}
        self.children_syncs = 0
        self.partials_in = 0
        self.partials_out = 0

    # -- children ----------------------------------------------------------------------

    async def child_sync(self, request: SyncRequest) -> SyncReply | None:
        """Take a child's sync; the reply (None: no answer from upstream yet, retry)."""
        self.children_syncs += 1
        sender, key = request.sender, (request.boot, request.seq)
        last = self.last.get(sender)
        if last is not None and last[:2] == key:
            verdicts = last[2]
        else:
            running = self.inflight.get(sender)
            if running is None or running[:2] != key:
                task = asyncio.ensure_future(self._take(request))
                running = self.inflight[sender] = (*key, task)
            try:
                verdicts = await asyncio.wait_for(asyncio.shield(running[2]), self.answer_timeout)
            except TimeoutError:
                return None
        if not self.synced:
            return None
        return self._reply(request, verdicts)

    async def _take(self, request: SyncRequest) -> Verdicts:
        """Queue a child's report; its verdicts once upstream ruled on them."""
        sender = request.sender
        lcps = self.below.get(sender)
        if lcps is None:
            lcps = self.below[sender] = frozenset(self.tree.lcps_under(sender))
        alone = sender not in self.seen  # may repeat a sync whose answer was lost
        futures: dict[str, list[asyncio.Future[VerdictMsg]]] = {}
        loop = asyncio.get_running_loop()
        for job_id, part in request.jobs.items():
            box = self.outbox.setdefault(job_id, _Outbox())
            view = self.jobs.get(job_id)
            waits = futures[job_id] = []
            for partial in part.partials:
                self.partials_in += 1
                future: asyncio.Future[VerdictMsg] = loop.create_future()
                waits.append(future)
                refusal = self._check(partial, lcps, view)
                if refusal:
                    future.set_result(VerdictMsg(accepted=False, reason=refusal))
                elif alone or view is None:
                    box.alone.append((partial, future))
                else:
                    self._add(box, view, partial, future)
            for lcp, devices in part.offered.items():
                if lcp in lcps:
                    box.offered.setdefault(lcp, set()).update(devices)
            box.failures += [f for f in part.failures if not foreign_ids([f.task_id], lcps)]
        if any(futures.values()):
            self.urgent.set()
        self.wake.set()
        verdicts = {job_id: list(await asyncio.gather(*waits)) for job_id, waits in futures.items()}
        self.last[sender] = (request.boot, request.seq, verdicts)
        self.seen.add(sender)
        return verdicts

    def _check(self, partial: PartialMsg, lcps: frozenset[str], view: RelayJob | None) -> str:
        """Why a child's partial sum is refused here, or ``""``."""
        foreign = foreign_ids(partial.task_ids, lcps)
        if foreign:
            return f"not its tasks: {foreign[0]!r} was not issued below the sender"
        if view is None:
            return ""
        cap = view.info.limits.max_samples_per_update * len(partial.task_ids)
        if partial.weight > cap:
            count = len(partial.task_ids)
            return f"over the cap: weight {partial.weight:g} for {count} updates (at most {cap})"
        return ""

    @staticmethod
    def _add(
        box: _Outbox, view: RelayJob, partial: PartialMsg, future: asyncio.Future[VerdictMsg]
    ) -> None:
        """Add a partial sum to the sum of its base version (refused if it is unusable)."""
        try:
            arrays = decode_arrays(partial.sums, dtype=np.float64)
        except ValueError as exc:
            future.set_result(VerdictMsg(accepted=False, reason=f"invalid: {exc}"))
            return
        if {k: v.shape for k, v in arrays.items()} != view.shapes or not partial.task_ids:
            reason = "shape mismatch: update arrays differ from the model's"
            future.set_result(VerdictMsg(accepted=False, reason=reason))
            return
        total = box.sums.get(partial.base_version)
        if total is None:
            total = box.sums[partial.base_version] = _Sum(arrays)
        else:
            for name, value in arrays.items():
                total.sums[name] += value
        total.weight += partial.weight
        total.task_ids += partial.task_ids
        total.devices += partial.devices
        total.futures.append(future)

    def _reply(self, request: SyncRequest, verdicts: Verdicts) -> SyncReply:
        """The reply to a child: every job, with its share of the selection."""
        lcps = sorted(self.below.get(request.sender) or self.tree.lcps_under(request.sender))
        fresh = request.server_boot != self.server_boot
        states = []
        for job_id, view in self.jobs.items():
            part = request.jobs.get(job_id)
            selected, epochs = {}, {}
            for lcp in lcps:
                epoch = view.epochs.get(lcp, -1)
                if fresh or part is None or part.selection_epochs.get(lcp) != epoch:
                    selected[lcp] = view.selected.get(lcp, [])
                    epochs[lcp] = epoch
            current = part is not None and part.known_version == view.version
            states.append(
                JobState(
                    job_id=job_id,
                    info=view.info if part is None or part.known_version < 0 else None,
                    version=view.version,
                    status=view.status,
                    reason=view.reason,
                    parameters="" if current else view.params.get(view.version, ""),
                    selected=selected,
                    selection_epochs=epochs,
                    verdicts=verdicts.get(job_id, []),
                )
            )
        return SyncReply(server_boot=self.server_boot, jobs=states)

    # -- upstream ----------------------------------------------------------------------

    def waiting(self) -> bool:
        """Whether children's partial sums wait for a verdict."""
        return any(box.sums or box.alone for box in self.outbox.values())

    def gathering(self) -> bool:
        """Whether candidates or failures wait to go upstream."""
        return any(box.offered or box.failures for box in self.outbox.values())

    def parts(self) -> tuple[dict[str, JobSync], Any]:
        """One part per job: the summed partial sums (and those that go alone), the
        candidates, the failures, and what this relay knows."""
        parts: dict[str, JobSync] = {}
        context: dict[str, list[list[asyncio.Future[VerdictMsg]]]] = {}
        for job_id in {*self.jobs, *self.outbox}:
            box = self.outbox.pop(job_id, _Outbox())
            view = self.jobs.get(job_id)
            partials, groups = [], []
            for version in sorted(box.sums):
                total = box.sums[version]
                partials.append(
                    PartialMsg(
                        base_version=version,
                        sums=encode_arrays(total.sums, np.float64),
                        weight=total.weight,
                        task_ids=total.task_ids,
                        devices=total.devices,
                    )
                )
                groups.append(total.futures)
            for partial, future in box.alone:
                partials.append(partial)
                groups.append([future])
            self.partials_out += len(partials)
            parts[job_id] = JobSync(
                known_version=-1 if view is None else view.known_version(),
                selection_epochs={} if view is None else dict(view.epochs),
                offered={lcp: sorted(devices) for lcp, devices in box.offered.items()},
                partials=partials,
                failures=box.failures,
            )
            context[job_id] = groups
        return parts, context

    def apply(self, reply: SyncReply, context: Any) -> bool:
        """Take the jobs' states and hand each verdict to the children waiting for it."""
        groups: dict[str, list[list[asyncio.Future[VerdictMsg]]]] = context
        changed = False
        seen = set()
        for state in reply.jobs:
            seen.add(state.job_id)
            view = self.jobs.get(state.job_id)
            if view is None:
                if state.info is None:
                    continue
                view = self.jobs[state.job_id] = RelayJob(state.info)
                changed = True
            for futures, verdict in zip(groups.pop(state.job_id, []), state.verdicts, strict=True):
                for future in futures:
                    if not future.done():
                        future.set_result(verdict)
            changed = view.take(state) or changed
            for lcp, devices in state.selected.items():
                view.selected[lcp] = devices
                view.epochs[lcp] = state.selection_epochs[lcp]
                changed = True
        gone = VerdictMsg(accepted=False, reason="the job is gone")
        for future in (f for left in groups.values() for waits in left for f in waits):
            if not future.done():
                future.set_result(gone)
        for job_id in set(self.jobs) - seen:
            del self.jobs[job_id]
            changed = True
        return changed


def relay_app(name: str, tree: RelayTree, upstream: str, member: Member) -> FastAPI:
    """The ASGI app of relay ``name`` of ``tree``, syncing with ``upstream``: it aggregates
    its subtree when the tree has aggregators, else passes syncs on.

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
    aggregator = None if tree.lcp_only else RelayAggregator(name, tree)
    exchanges: Samples = deque(maxlen=100_000) if aggregator is None else aggregator.exchanges

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(aggregator.run(pool)) if aggregator is not None else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            pool.close()

    app = FastAPI(title=f"redfl relay {name}", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.aggregator = aggregator

    async def sync(request: SyncRequest, caller: str, body: bytes) -> Answer:
        refusal = speaks_for(tree, caller, request.sender)
        if refusal:
            return 403, error_body(Status.ERROR, refusal)
        if aggregator is not None:
            reply = await aggregator.child_sync(request)
            if reply is None:
                return 502, error_body(Status.RETRY, f"relay {name}: no answer from upstream yet")
            return ok(reply)
        return await _pass_on(pool, body, name, exchanges)

    meanings = {
        403: "The caller may not sync for the sender the body names",
        502: "The upstream (parent relay or server) has not answered: retry",
    }
    serve_routes(
        app, [Route("/sync", SyncRequest, SyncReply, sync, callers, meanings, MAX_SYNC_BYTES)]
    )
    operator = guard(app, Operator(member.peers))
    anyone = guard(app, PeerCertificate(member.peers, dict.fromkeys(KINDS)))

    @app.get("/health", dependencies=[anyone])
    async def health() -> dict[str, object]:
        synced = True if aggregator is None else aggregator.synced
        return {"status": "OK", "relay": name, "synced": synced}

    @app.get("/stats", dependencies=[operator])
    async def stats() -> dict[str, object]:
        """Syncs taken and sent, partial sums in and out, and the time of each exchange
        upstream."""
        out: dict[str, object] = {"aggregates": aggregator is not None}
        if aggregator is not None:
            out.update(
                children_syncs=aggregator.children_syncs,
                syncs=aggregator.seq,
                partials_in=aggregator.partials_in,
                partials_out=aggregator.partials_out,
            )
        else:
            out["syncs"] = len(exchanges)
        return {**out, "upstream": summary(exchanges)}

    return app


async def _pass_on(pool: Poster, body: bytes, name: str, exchanges: Samples) -> Answer:
    """Send a sync's body upstream unchanged; the answer."""
    start = time.perf_counter()
    try:
        answer = await pool.post("/sync", body, _JSON)
    except ForwardError as exc:
        return 502, error_body(Status.RETRY, f"relay {name}: upstream unreachable: {exc}")
    exchanges.append(time.perf_counter() - start)
    return answer
