"""The ``sites`` runtime's backend: worker ``i`` is site ``i``, reached over mutual TLS.

``start`` serves the sites' endpoints (:mod:`redfl.runtime.sites.service`) on ``listen``;
``wait_for_workers`` waits up to ``join_timeout`` for every expected site to join. Then
``call(site, FitSegments(...))`` queues a fit task for the site (its client's instructions
merged, the round's parameters encoded once for every site) and returns its pending reply;
the site, which long-polls for work, runs it with the same star runner a simulated worker
uses and posts its client's answer, which the server checks and folds as the runner would
(:mod:`redfl.runtime.sites.jobs`). So strategies, DP, robust aggregation, checkpoints,
exact resume and the run folder work unchanged, and a site's results are the bits a
simulated client of the same config gives.

Under ``[secure_aggregation]`` the four stages of a round travel the same way
(:mod:`redfl.runtime.sites.secure_jobs`): ``SecureFit``, ``ShareKeys``, ``MaskInputs`` and
``Unmask`` become tasks for the site, which keeps its client's update, private keys and
seeds between them and answers with public keys, ciphertexts, its masked vector and the
shares it may reveal. The server process never holds a site's update or private key. A site
that joins again during a secure round has lost its protocol state: it fails the round's
remaining stages (a dropout, as one that left).

What the driver asks a worker about itself is answered here: a probe names the client of
the site's oldest job and how long ago it was queued (so ``client_timeout`` applies to a
site that stopped answering as to a stuck worker), ``kill`` abandons the site's jobs (their
late replies are refused), and a site that is not connected fails its calls at once: the
runtime re-creates nothing, a site comes back by joining again. A site's client states
stay at the site: they are not exported into checkpoints.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, cast

import numpy as np

from redfl.core.arrays import copy_parameters
from redfl.core.events import Event
from redfl.core.result import FederationError
from redfl.privacy.secagg import SecAggConfig
from redfl.runtime.backend import Backend, Plan
from redfl.runtime.host import Close, Connect, Probe, Stats, StopNodes
from redfl.runtime.local import outcome
from redfl.runtime.protocol import Outcome, Pending, R, Request
from redfl.runtime.replies import WorkerProbe
from redfl.runtime.resources import ResourcesConfig
from redfl.runtime.secagg_runner import MaskInputs, SecureFit, ShareKeys, Unmask
from redfl.runtime.sites.admin import open_home
from redfl.runtime.sites.config import SitesConfig
from redfl.runtime.sites.jobs import EvaluateJob, FitJob, Job
from redfl.runtime.sites.listener import Listener
from redfl.runtime.sites.roster import Roster, RunInfo, Session, SiteState
from redfl.runtime.sites.secure_jobs import SecureFitJob, StageJob, StageRequest
from redfl.runtime.sites.service import Peers, SiteService
from redfl.runtime.sites.wire import Broadcast
from redfl.runtime.star_runner import (
    EvaluateClients,
    FitSegments,
    ReleaseSegments,
    client_instructions,
)
from redfl.runtime.state_runner import ExportClientStates, ImportClientStates
from redfl.trust import Verifier, server_context

LOG = logging.getLogger("redfl.sites")

FINISH_S = 2.0
"""How long stopping waits for the sites' open polls to hear that the run has ended."""
JOIN_POLL_S = 0.05
"""How often the join wait looks at the roster."""
GATHER_S = 0.005
"""How long a wait for replies lets more arrive, per thousand calls pending."""


class SiteAbsent(RuntimeError):
    """A request about a site that is not connected."""


class SitesBackend(Backend):
    """Site ``i`` (``table.expected[i]``) is worker ``i``, hosting the node of that name.

    Parameters
    ----------
    table:
        The ``[sites]`` table (its ``home`` must be a federation home).

    Raises
    ------
    ValueError
        If ``table.home`` is not a federation home.
    """

    def __init__(self, table: SitesConfig) -> None:
        self.table = table
        self.home = open_home(table.home)
        self._roster: Roster | None = None
        self._service: SiteService | None = None
        self._listener: Listener | None = None
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)
        self._settled = threading.Condition()
        self._replies = 0
        self._round = -1
        self._config: SecAggConfig | None = None
        self._secure: dict[int, int] = {}
        """Site -> its session when it advertised its keys in the current secure round."""

    # -- the plan ------------------------------------------------------------------------
    @property
    def num_workers(self) -> int:
        """One worker per expected site."""
        return len(self.table.expected)

    def plan_resources(self, asked: ResourcesConfig) -> ResourcesConfig:
        """One worker per site, whatever ``[resources]`` asks."""
        return ResourcesConfig(num_workers=self.num_workers)

    def available_resources(self) -> Mapping[str, float]:
        """A CPU per site (the sites bring their own machines)."""
        return {"CPU": float(self.num_workers)}

    def machine_resources(self) -> list[Mapping[str, float]]:
        """The sites, as one machine that holds them all."""
        return [self.available_resources()]

    def worker_nodes(self) -> list[str]:
        """Each worker's site (``site:<name>``)."""
        return [f"site:{name}" for name in self.table.expected]

    # -- starting and stopping -----------------------------------------------------------
    def start(self, plan: Plan) -> None:
        """Check that the plan puts client ``i`` at site ``i``, then serve the sites.

        Raises
        ------
        ValueError
            If the federation is not a star of the expected sites' clients.
        ConnectionError
            If ``listen`` cannot be bound.
        """
        names = list(self.table.expected)
        if plan.manager.topology is not None or plan.runners:
            raise ValueError(
                "the sites runtime runs star clients only (fit and evaluate requests); "
                "this federation's nodes exchange messages or run other requests"
            )
        hosted = [[node.node_id for node in spec.nodes] for spec in plan.workers]
        if hosted != [[name] for name in names]:
            raise ValueError(
                f"the sites runtime runs client i at site i of sites.expected {names[:5]}; "
                f"the federation's workers host {hosted[:5]} (give client_ids=sites.expected)"
            )
        sites = [
            (node.node_id, tuple(sorted(node.roles)))
            for spec in plan.workers
            for node in spec.nodes
        ]
        info = RunInfo(plan.federation_id, plan.seed, plan.num_nodes)
        roster = Roster(sites, info, wake=self._wake)
        verifier = Verifier.of(self.home, kinds=["site"], names=names)
        service = SiteService(roster, Peers(verifier, self.home.register_path))
        self._roster, self._service = roster, service
        host, port = self.table.address()
        listener = Listener(service, host, port, server_context(self.home))
        try:
            listener.start()
        except OSError as error:
            raise ConnectionError(
                f"sites.listen: cannot serve on {self.table.listen}: {error.strerror or error}"
            ) from None
        self._listener = listener
        LOG.info("sites: serving %s on https://%s", ", ".join(names), self.table.listen)

    def wait_for_workers(self, notify: Callable[[Event], None]) -> None:
        """Wait for every expected site to join (at most ``join_timeout`` s), passing the
        sites' events to ``notify`` as they come.

        Raises
        ------
        FederationError
            Naming the sites that did not join in time.
        """
        roster = self._require()
        deadline = time.monotonic() + self.table.join_timeout
        missing = roster.missing()
        while missing and time.monotonic() < deadline:
            for event in roster.events():
                notify(event)
            time.sleep(JOIN_POLL_S)
            missing = roster.missing()
        for event in roster.events():
            notify(event)
        if missing:
            joined = [name for name in self.table.expected if name not in missing]
            raise FederationError(
                f"sites did not join within sites.join_timeout={self.table.join_timeout:g} s: "
                f"{', '.join(missing)} missing (joined: {', '.join(joined) or 'none'})"
            )

    def stop(self) -> None:
        """Tell the sites' open polls that the run has ended, stop serving, end every
        session."""
        roster = self._roster
        if roster is not None:
            roster.finish()
            deadline = time.monotonic() + FINISH_S
            while roster.polling() and time.monotonic() < deadline:
                time.sleep(0.01)
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if roster is not None:
            roster.end_all("the run ended")

    # -- calls ---------------------------------------------------------------------------
    def put(self, value: Any) -> Any:
        """The round's parameters with their wire encoding, made once for every site."""
        if isinstance(value, dict) and all(isinstance(v, np.ndarray) for v in value.values()):
            return Broadcast(copy_parameters(value))
        return value

    def call(self, worker: int, request: Request[R]) -> Pending[R]:
        """Queue a fit or evaluate task for site ``worker``; answer the rest here."""
        roster = self._require()
        future: Future[Any] = Future()
        try:
            if isinstance(request, SecureFit | ShareKeys | MaskInputs | Unmask):
                job = self._secure_job(roster, worker, request)
                job.future.add_done_callback(self._settle)
                if not job.done:
                    roster.submit(job)
                return cast(Pending[R], Pending(job.future))
            if isinstance(request, FitSegments | EvaluateClients):
                job = self._job(worker, request)
                job.future.add_done_callback(self._settle)
                roster.submit(job)
                return cast(Pending[R], Pending(job.future))
            future.set_result(self._answer(roster, worker, request))
        except Exception as error:
            future.set_exception(error)
        return Pending(future)

    def _job(self, worker: int, request: FitSegments | EvaluateClients) -> Job[Any]:
        name = self.table.expected[worker]
        parameters = request.parameters
        shared = parameters if isinstance(parameters, Broadcast) else Broadcast(parameters)
        job_id = f"{self._prefix}-{next(self._ids)}"
        if isinstance(request, FitSegments):
            if [list(s) for s in request.segments] != [[name]] or request.guests:
                raise ValueError(f"site {name!r} runs its own client only, not {request.segments}")
            instructions = client_instructions(request, name)
            return FitJob(job_id, worker, request, shared, instructions, name)
        if list(request.node_ids) != [name]:
            raise ValueError(f"site {name!r} runs its own client only, not {request.node_ids}")
        return EvaluateJob(job_id, worker, shared, request.instructions, name)

    def _secure_job(
        self, roster: Roster, worker: int, request: SecureFit | StageRequest
    ) -> Job[Any]:
        """The job of a secure round's stage for site ``worker``.

        The round's public parameters are kept from its fit, to check the later answers;
        a site whose session is not the one it advertised its keys in (it left and joined
        again, and so lost its protocol state) fails the later stages at once.
        """
        name = self.table.expected[worker]
        job_id = f"{self._prefix}-{next(self._ids)}"
        session = roster.probe(worker)[0]
        if isinstance(request, SecureFit):
            if [list(s) for s in request.segments] != [[name]] or request.guests:
                raise ValueError(f"site {name!r} runs its own client only, not {request.segments}")
            if request.secagg is None:
                raise ValueError("SecureFit needs the round's secagg config")
            parameters = request.parameters
            shared = parameters if isinstance(parameters, Broadcast) else Broadcast(parameters)
            if self._round != request.secagg.round:
                self._secure = {}
            self._secure[worker] = session
            self._round, self._config = request.secagg.round, request.secagg
            instructions = client_instructions(request, name)
            return SecureFitJob(job_id, worker, request, shared, instructions, name)
        config = self._config
        if config is None or request.round != self._round:
            raise ValueError(f"no secure round {request.round} was started at the sites")
        job = StageJob(job_id, worker, name, request, config)
        if self._secure.get(worker) != session:
            job.fail(
                f"site {name!r} joined again since it advertised its keys: its protocol "
                "state of the round is lost"
            )
        return job

    def _answer(self, roster: Roster, worker: int, request: Request[Any]) -> Any:
        """The reply to a request about the site itself (never sent to it)."""
        if isinstance(request, Probe):
            number, node_id, elapsed = roster.probe(worker)
            return WorkerProbe(number, node_id, elapsed)
        if isinstance(request, Stats):
            state = roster.states()[worker]
            if not state.connected:
                raise SiteAbsent(f"site {state.name!r} is not connected")
            return {"hosted": 1.0, "rounds": float(state.rounds), "failures": state.failures}
        if isinstance(request, Connect):
            return worker
        if isinstance(request, StopNodes | Close):
            return None
        if isinstance(request, ReleaseSegments):
            return []  # a site's client runs at its site only
        if isinstance(request, ExportClientStates):
            return {}  # a site's client states never leave the site
        if isinstance(request, ImportClientStates) and not request.states:
            return 0
        raise TypeError(
            f"the sites runtime sends sites only fit and evaluate tasks, not "
            f"{type(request).__name__}"
        )

    def finished(
        self, pending: Sequence[Pending[R]], timeout: float | None
    ) -> list[tuple[int, Outcome[R]]]:
        """Every finished call of ``pending``, waiting up to ``timeout`` s for the first.

        A round has a call per site, and replies trickle in: rather than a waiter on every
        call, the wait is for the next reply of any call (each call's future reports when
        it settles), and with many calls pending the replies of a short while
        (:data:`GATHER_S` per thousand calls) are taken together, so that a thousand sites
        do not cost a thousand scans of a thousand calls.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        window = GATHER_S * len(pending) / 1000
        while True:
            with self._settled:
                seen = self._replies
            done = [i for i, p in enumerate(pending) if p.handle.done()]
            left = None if deadline is None else deadline - time.monotonic()
            if done or (left is not None and left <= 0):
                return [(i, outcome(pending[i].handle)) for i in done]
            with self._settled:
                if self._replies == seen:
                    self._settled.wait(left)
            if window > 0:  # let the replies arriving with this one settle too
                time.sleep(min(window, left) if left is not None else window)

    def _settle(self, future: Future[Any]) -> None:
        with self._settled:
            self._replies += 1
            self._settled.notify_all()

    def kill(self, worker: int) -> None:
        """Abandon site ``worker``'s jobs (a client past its timeout): their replies, if
        they come, are refused."""
        self._require().abandon(worker, "it ran past its timeout")

    def reconnect(self, worker: int) -> Pending[int]:
        """Nothing to do: a site that comes back joins by itself."""
        future: Future[int] = Future()
        future.set_result(worker)
        return Pending(future)

    # -- reports -------------------------------------------------------------------------
    def events(self) -> list[Event]:
        """Sites that joined, took part in a round or left, since the last call."""
        return [] if self._roster is None else self._roster.events()

    def states(self) -> list[SiteState]:
        """Every site's state now (connected, last heard from, rounds, failures)."""
        return [] if self._roster is None else self._roster.states()

    def _wake(self, session: Session) -> None:
        if self._service is not None:
            self._service.wake(session)

    def _require(self) -> Roster:
        if self._roster is None:
            raise RuntimeError("the sites backend has not started")
        return self._roster
