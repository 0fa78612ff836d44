"""The site side: the user's own client class, at its site, serving the server's rounds.

A site holds its credential bundle (``redfl sites add``: its key, its certificate, the CA
and the server's URL), its client class (the very class simulated) and its own options
(the path of its data, say). It connects outbound only, so it works behind NAT and a
firewall: it verifies the server against the CA (and that it is the federation's server),
proves its own name with its key, joins the run and learns its client's place (node id,
index, number of nodes, seed), builds the client in a :class:`~redfl.runtime.host.Host`
with the star runner a simulated worker uses, and then:

- one thread keeps a long poll open for work (the server knows the site is alive while it
  polls, also while the client runs) and queues the tasks it gets;
- the main thread runs each task through the host (fit or evaluate, only for its own
  node) and posts the client's answer, printing one line per task.

Under secure aggregation the tasks are the four stages of a SecAgg+ round
(:mod:`redfl.runtime.sites.secure_wire`): :func:`secure_step` runs them with the secure
aggregation runner a simulated worker uses, in the site's host, so the client's update, its
private keys and seeds stay in this process between the stages, and the replies hold only
public keys, encrypted shares, the masked vector and the shares the server may see.

A network loss or a server restart is retried with backoff (at most :data:`BACKOFF_MAX_S`
seconds apart, each wait cut by a random part of up to a half so that many sites do not
come back at the same instant) until the server answers again; a session the server no
longer knows is joined again. A new run (a new run id) builds the client afresh. A refusal
of the site's credential (revoked, unknown, expired, another CA) or a server the CA did not
certify ends the site with :class:`SiteRefused`; the end of the run ends it normally unless
it stays for the next run.
"""

from __future__ import annotations

import os
import queue
import random
import ssl
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
from pydantic import BaseModel

from redfl.core.config import node_options
from redfl.core.imports import resolve
from redfl.privacy.secagg import NeighbourKeys, RoutedShares, layout_of
from redfl.runtime.host import Host
from redfl.runtime.secagg_runner import (
    MaskedReply,
    MaskInputs,
    SecureFit,
    SecureFitBatch,
    ShareKeys,
    StageReply,
    Unmask,
)
from redfl.runtime.sites.admin import SERVER_URL
from redfl.runtime.sites.secure_wire import (
    SecureFitReply,
    SecureFitTask,
    SecureReply,
    SecureTask,
    StageResponse,
    any_reply_frame,
    failed_reply,
    read_any_task,
)
from redfl.runtime.sites.wire import (
    VERSION,
    EvaluateReply,
    FitReply,
    Reply,
    Task,
    Welcome,
    WireError,
    read_welcome,
)
from redfl.runtime.star_runner import EvaluateClients, FitSegments, describe
from redfl.runtime.topology_manager import TopologyManager
from redfl.runtime.virtual import NodeFactory, VirtualNode
from redfl.trust import Bundle, BundleError, UntrustedError, Verifier, client_context

BACKOFF_START_S = 0.2
"""The first wait before trying the server again."""
BACKOFF_MAX_S = 2.0
"""The longest wait between tries."""
CONNECT_TIMEOUT_S = 10.0
"""How long connecting to the server may take."""
SEND_TIMEOUT_S = 120.0
"""How long sending a reply may take."""

_REFUSED = ("ALERT_CERTIFICATE", "ALERT_BAD_CERTIFICATE", "ALERT_UNKNOWN_CA", "ALERT_ACCESS")


class SiteRefused(Exception):
    """The server refused this site's credential, or the server is not the federation's;
    retrying cannot help. The message says why."""


class _Retry(Exception):
    """The server cannot be reached or answered oddly; try again after a while."""


@dataclass
class _Session:
    """A joined session: its welcome, its host, and the state its two threads share."""

    welcome: Welcome
    host: Host
    tasks: queue.Queue[Task | SecureTask | None]
    have: set[str]
    lock: threading.Lock
    ended: str | None = None


class SiteAgent:
    """One site's process: joins the run, polls for work, runs its client, replies.

    Parameters
    ----------
    bundle:
        The site's credential (its ``server_url`` field says where the server is).
    client:
        The client class (or factory), built with ``client(**options)``.
    options:
        The client's options (this site's own).
    stay:
        Keep serving the next run when one ends (else :meth:`run` returns).
    echo:
        Where the one-line reports go.
    stop:
        Set it to end :meth:`run` (at the next poll or retry).
    """

    def __init__(
        self,
        bundle: Bundle,
        client: NodeFactory,
        options: Mapping[str, Any] | None = None,
        *,
        stay: bool = False,
        echo: Callable[[str], None] = print,
        stop: threading.Event | None = None,
    ) -> None:
        url = bundle.fields.get(SERVER_URL)
        if not isinstance(url, str):
            raise ValueError(f"the credential bundle has no {SERVER_URL} field")
        self.name = bundle.identity.name
        self.url = url
        self.client = client
        self.options = dict(options or {})
        self.stay = stay
        self.echo = echo
        self.stop = stop or threading.Event()
        self._context = client_context(bundle)
        self._server = Verifier.of(bundle, kinds=["server"])
        self._run: str | None = None
        self._host: Host | None = None
        self._backoff = BACKOFF_START_S
        self._jitter = random.Random()
        self._outage: str | None = None

    def run(self) -> None:
        """Serve runs until one ends (or, staying, until ``stop`` is set).

        Raises
        ------
        SiteRefused
            If the server refused the credential, or is not the federation's server.
        """
        with self._http(60.0) as http:
            while not self.stop.is_set():
                try:
                    welcome = self._join(http)
                except _Retry as retry:
                    self._wait(str(retry))
                    continue
                ended = self._serve(http, welcome)
                if ended == "finished":
                    self.echo(f"site {self.name}: the run {welcome.run} has ended")
                    if not self.stay:
                        return
                    self._wait(None)
                else:
                    self.echo(f"site {self.name}: {ended}; joining again")

    # -- joining -------------------------------------------------------------------------
    def _join(self, http: httpx.Client) -> Welcome:
        response = self._request(http, "POST", "/v1/join", json={"v": VERSION})
        if response.status_code == 410:
            raise _Retry("the server's run has ended; waiting for the next one")
        if response.status_code != 200:
            raise _Retry(f"the server refused the join: {_error(response)}")
        self._check_server(response)
        try:
            welcome = read_welcome(response.json())
        except (ValueError, WireError) as error:
            raise _Retry(f"the server sent a malformed welcome: {error}") from None
        if welcome.node_id != self.name:
            raise SiteRefused(f"the server calls this site {welcome.node_id!r}, not {self.name!r}")
        self._outage = None
        self._backoff = BACKOFF_START_S
        if welcome.run != self._run:
            self._build(welcome)
        self.echo(
            f"site {self.name}: joined run {welcome.run} at {self.url} as client "
            f"{welcome.index + 1} of {welcome.num_nodes}"
        )
        return welcome

    def _check_server(self, response: httpx.Response) -> None:
        stream = response.extensions.get("network_stream")
        ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
        der = ssl_object.getpeercert(True) if ssl_object is not None else None
        if not der:
            raise SiteRefused("cannot read the server's certificate to check who it is")
        try:
            self._server.identity(der)
        except UntrustedError as error:
            raise SiteRefused(f"the server is not the federation's: {error.reason}") from None

    def _build(self, welcome: Welcome) -> None:
        """A host with this site's client for a new run (set up now, so that the first
        round does not wait for it; a setup error is reported by every task, as when
        simulated)."""
        node = VirtualNode(
            self.client, welcome.node_id, frozenset(welcome.roles), welcome.index, self.options
        )
        if self._host is not None:
            self._host.close()
        manager = TopologyManager(None, {welcome.node_id: welcome.index})
        host = Host(welcome.index, welcome.run, welcome.seed, welcome.num_nodes, [node], manager)
        self._host, self._run = host, welcome.run
        try:
            host.node(welcome.node_id)
        except Exception as error:
            self.echo(f"site {self.name}: the client cannot be set up: {describe(error)}")

    # -- serving a session ---------------------------------------------------------------
    def _serve(self, http: httpx.Client, welcome: Welcome) -> str:
        assert self._host is not None
        session = _Session(welcome, self._host, queue.Queue(), set(), threading.Lock())
        poller = threading.Thread(
            target=self._poll, args=(session,), name=f"redfl-site-{self.name}-poll", daemon=True
        )
        poller.start()
        try:
            while True:
                task = session.tasks.get()
                if task is None:
                    return session.ended or "the session ended"
                reply = self._execute(session, task)
                self._send(http, session, reply)
        finally:
            with session.lock:
                session.ended = session.ended or "the site stopped"

    def _poll(self, session: _Session) -> None:
        """Keep a long poll open for work until the session ends (another thread)."""
        welcome = session.welcome
        headers = {"x-redfl-session": welcome.session}
        ended = None
        with self._http(welcome.poll_seconds + 30.0) as http:
            while ended is None and session.ended is None and not self.stop.is_set():
                with session.lock:
                    have = ",".join(sorted(session.have))
                try:
                    response = self._request(
                        http, "GET", "/v1/work", params={"have": have}, headers=headers
                    )
                except _Retry as retry:
                    self._wait(str(retry))
                    continue
                except SiteRefused as refused:
                    ended = f"refused: {refused}"
                    break
                status = response.status_code
                if status == 200:
                    try:
                        task = read_any_task(response.content)
                    except WireError as error:
                        self._wait(f"the server sent a malformed task: {error}")
                        continue
                    with session.lock:
                        session.have.add(task.job)
                    session.tasks.put(task)
                elif status == 404:
                    ended = f"the server ended the session ({_error(response)})"
                elif status == 410:
                    ended = "finished"
                elif status == 403:
                    ended = f"refused: {_error(response)}"
                elif status != 204:
                    self._wait(f"the server answered a poll with {status}: {_error(response)}")
        with session.lock:
            session.ended = session.ended or ended or "the site stopped"
        session.tasks.put(None)

    def _execute(self, session: _Session, task: Task | SecureTask) -> Reply | SecureReply:
        """Run ``task`` on the site's client; one line about it."""
        welcome, started = session.welcome, time.perf_counter()
        rnd = task.instructions.round if isinstance(task, Task) else task.round
        if task.node_id != welcome.node_id:
            reason = f"this site runs {welcome.node_id!r} only, not {task.node_id!r}"
            self.echo(f"site {self.name}: round {rnd}: refused a task: {reason}")
            return failed_reply(task, reason)
        if not isinstance(task, Task):
            return self._secure(session, task)
        node_ids = [welcome.node_id]
        if task.kind == "fit":
            request = FitSegments(task.parameters, [node_ids], task.instructions, fold=False)
            batch = session.host.handle(request)
            seconds = time.perf_counter() - started
            if batch.updates:
                update = batch.updates[0]
                self.echo(
                    f"site {self.name}: round {rnd}: fit {update.num_examples} examples"
                    f"{_metrics(update.metrics)} ({seconds:.2f} s)"
                )
                return FitReply(
                    task.job, True, update.parameters, update.num_examples, dict(update.metrics)
                )
            reason = batch.failures[0].reason
            self.echo(f"site {self.name}: round {rnd}: fit failed: {reason}")
            return FitReply(task.job, False, reason=reason)
        evaluated = session.host.handle(
            EvaluateClients(task.parameters, node_ids, task.instructions)
        )
        if evaluated.reports:
            _, loss, count, metrics = evaluated.reports[0]
            self.echo(
                f"site {self.name}: round {rnd}: evaluate loss {loss:.4f}{_metrics(metrics)} "
                f"on {count} examples"
            )
            return EvaluateReply(task.job, True, loss, count, metrics)
        reason = evaluated.failures[0].reason
        self.echo(f"site {self.name}: round {rnd}: evaluate failed: {reason}")
        return EvaluateReply(task.job, False, reason=reason)

    def _secure(self, session: _Session, task: SecureTask) -> Reply | SecureReply:
        """Run a secure round's stage with the site's secure aggregation runner, which keeps
        the client's update, private keys and seeds here between the stages; the reply
        holds only what the server may see. One line about it."""
        started, node_id = time.perf_counter(), session.welcome.node_id
        what = "secure fit" if isinstance(task, SecureFitTask) else task.kind.replace("_", " ")
        reply: Reply | SecureReply
        try:
            reply = secure_step(session.host, node_id, task)
        except Exception as error:  # as on a worker: the client's failure, never the site's
            reply = failed_reply(task, f"secure aggregation: {describe(error)}")
        seconds = time.perf_counter() - started
        if reply.ok:
            self.echo(f"site {self.name}: round {task.round}: {what} ({seconds:.2f} s)")
        else:
            self.echo(f"site {self.name}: round {task.round}: {what} failed: {reply.reason}")
        return reply

    def _send(self, http: httpx.Client, session: _Session, reply: Reply | SecureReply) -> None:
        """Post ``reply`` until the server has it, refuses it or the session ends (an update
        that cannot travel, an array of complex numbers say, is sent as the failure)."""
        try:
            body = any_reply_frame(reply)
        except WireError as error:
            reason = f"the client's answer cannot be sent: {error}"
            self.echo(f"site {self.name}: {reason}")
            body = any_reply_frame(failed_reply(reply, reason))
        headers = {"x-redfl-session": session.welcome.session, "x-redfl-job": reply.job}
        try:
            while session.ended is None and not self.stop.is_set():
                try:
                    response = self._request(
                        http, "POST", "/v1/reply", content=body, headers=headers
                    )
                except _Retry as retry:
                    self._wait(str(retry))
                    continue
                if response.status_code != 200:
                    self.echo(
                        f"site {self.name}: the server did not take the reply: {_error(response)}"
                    )
                return
        finally:
            with session.lock:
                session.have.discard(reply.job)

    # -- the connection ------------------------------------------------------------------
    def _http(self, read_timeout: float) -> httpx.Client:
        timeout = httpx.Timeout(
            connect=CONNECT_TIMEOUT_S, read=read_timeout, write=SEND_TIMEOUT_S, pool=None
        )
        return httpx.Client(base_url=self.url, verify=self._context, timeout=timeout)

    def _request(self, http: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; network trouble is :class:`_Retry`, a refusal :class:`SiteRefused`."""
        try:
            response = http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            refusal = _refusal(error)
            if refusal is not None:
                raise SiteRefused(refusal) from None
            raise _Retry(f"the server at {self.url} cannot be reached ({_cause(error)})") from None
        if response.status_code == 403:
            raise SiteRefused(f"the server refused this site: {_error(response)}")
        return response

    def _wait(self, why: str | None) -> None:
        """Back off before trying again (saying why once per outage)."""
        if why is not None and why != self._outage:
            self.echo(f"site {self.name}: {why}; retrying")
            self._outage = why
        self.stop.wait(self._backoff * self._jitter.uniform(0.5, 1.0))  # no herd of retries
        self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)


def secure_step(host: Host, node_id: str, task: SecureTask) -> SecureReply:
    """Answer a secure round's task for client ``node_id`` with ``host``'s secure
    aggregation runner (the one a simulated worker uses): the fit rebuilds the round's
    public parameters from the task, fits, keeps the update and advertises the keys; each
    later stage uses what the runner kept.

    Raises
    ------
    ValueError
        If the round's public parameters cannot be rebuilt (settings that do not fit).
    """
    if isinstance(task, SecureFitTask):
        layout = layout_of(task.parameters)
        config = task.table.round_config(task.clients, layout, task.round, task.seed)
        request = SecureFit(
            task.parameters,
            [[node_id]],
            task.instructions,
            False,
            task.policy,
            secagg=config,
            table=task.table,
            ids={node_id: task.client},
        )
        batch = cast(SecureFitBatch, host.handle(request))
        if not batch.adverts:
            reason = batch.failures[0].reason if batch.failures else "(no reason)"
            return SecureFitReply(task.job, False, reason=reason)
        advert = batch.adverts[0]
        return SecureFitReply(
            task.job,
            True,
            dict(batch.metric_sums),
            dict(batch.metric_examples),
            dict(batch.stats),
            advert.cipher_key,
            advert.mask_key,
        )
    client, message = task.client, task.message
    reply: StageReply[Any] | MaskedReply
    if isinstance(message, NeighbourKeys):
        reply = host.handle(ShareKeys(task.round, {client: message}))
    elif isinstance(message, RoutedShares):
        reply = host.handle(MaskInputs(task.round, {client: message}))
    else:
        reply = host.handle(Unmask(task.round, {client: message}))
    if client in reply.failed:
        return StageResponse(task.kind, task.job, False, reason=reply.failed[client])
    if isinstance(reply, MaskedReply):
        if reply.masked is None:
            return StageResponse(task.kind, task.job, False, reason="(no masked input)")
        return StageResponse(task.kind, task.job, True, reply.masked.vector)
    return StageResponse(task.kind, task.job, True, reply.messages[client])


def _refusal(error: BaseException) -> str | None:
    """Why a TLS failure means this site cannot connect at all (``None``: it may pass)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"the server's certificate is not the federation's: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError) and any(r in str(cause.reason) for r in _REFUSED):
            return f"the server refused this site's certificate ({cause.reason})"
        cause = cause.__cause__ or cause.__context__
    return None


def _cause(error: BaseException) -> str:
    root = error
    while (deeper := root.__cause__ or root.__context__) is not None:
        root = deeper
    return f"{type(root).__name__}: {root}" if str(root) else type(root).__name__


def _error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else f"HTTP {response.status_code}"


def _metrics(metrics: Mapping[str, float]) -> str:
    shown = list(metrics.items())[:3]
    return "".join(f", {name} {value:.4g}" for name, value in shown)


def run_site(
    credentials: str | Path | Bundle,
    client: NodeFactory | str,
    options: Mapping[str, Any] | str | Path | None = None,
    *,
    workdir: str | Path | None = None,
    stay: bool = False,
    echo: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> None:
    """Run a site: join the server its credential names and serve its client's rounds.

    Parameters
    ----------
    credentials:
        The site's credential bundle (a file written by ``redfl sites add``, mode 0600).
    client:
        The client class, or its import path ``module:Class`` (imported from ``workdir``
        too), the very class simulated.
    options:
        The client's options: a mapping or a TOML file (this site's own: its data path,
        say), validated by the class's ``Options`` model if it has one.
    workdir:
        The folder the site runs in (relative paths in the options are read from it).
    stay:
        Serve the next run when one ends instead of returning.
    echo:
        Where the one-line reports go (one per task, joins, outages).
    stop:
        Set it to make the site return.

    Raises
    ------
    ValueError
        A bad credential file, options file or option, or a client that does not import
        (the message names it; nothing was sent).
    SiteRefused
        The server refused the credential (revoked, unknown, expired, another CA, a name
        it does not expect), or the server is not the federation's.
    """
    bundle = credentials if isinstance(credentials, Bundle) else _bundle(Path(credentials))
    values = _options_file(Path(options)) if isinstance(options, str | Path) else options
    if workdir is not None:
        folder = Path(workdir).resolve()
        if not folder.is_dir():
            raise ValueError(f"--workdir: {folder} is not a folder")
        os.chdir(folder)
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    template = resolve(client, "--client") if isinstance(client, str) else client
    checked = node_options(template, values or {}, "options")
    if isinstance(checked, BaseModel):
        checked = checked.model_dump()
    SiteAgent(bundle, template, checked, stay=stay, echo=echo, stop=stop).run()


def _bundle(path: Path) -> Bundle:
    try:
        return Bundle.load(path)
    except FileNotFoundError:
        raise ValueError(f"--credentials: {path} does not exist") from None
    except BundleError as error:
        raise ValueError(f"--credentials: {error}") from None


def _options_file(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"--options: {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"--options: {path} is not a readable TOML file: {error}") from None
