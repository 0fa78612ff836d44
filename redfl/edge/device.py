"""A device: the user's ``Client`` class on the device side of an edge job.

:func:`run` (and ``redfl edge device``) is one real device: it takes its credentials (a
token issued in advance, or an enrolment credential for ``/enroll``), asks the routing proxy
for the job by name, checks that the job runs the device's own class (a device must not train
another job's model: :class:`JobMismatch`), builds the class as a run builds a client (the
job's options, overridden by the device's own, validated by the class's ``Options``; bound to
the device's id, the job's id and seed, and its place in the fleet; ``setup()`` once), and
then asks for tasks until the job ends: for each, ``fit(parameters, config)`` from the task's
model (``config`` is the task's, with ``round`` = the model version), and the update (the
returned parameters minus the task's) goes back as the result, sent again on ``RETRY`` or a
lost reply. A ``fit`` that raises, or returns parameters that do not fit the model, is
reported as the task's failure (the job records it) and the device goes on. It gives up after
``timeout`` seconds, also when the proxy cannot be reached.

:class:`Trainer` (the class built for one job: a task in, a result body out) and
:class:`ProxyClient` (JSON over the proxy's kept-alive connections, with the deadline) are
shared with the simulator (:mod:`redfl.edge.simulator`).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from pydantic import BaseModel

from redfl.core.arrays import check_update
from redfl.core.config import ConfigError, node_options
from redfl.core.instructions import Instructions
from redfl.core.roles import Role
from redfl.edge.forward import ForwardError, LcpConnections
from redfl.edge.jobs import read_json
from redfl.edge.protocol import JobReply, decode_arrays, encode_arrays
from redfl.nodes.client import Client
from redfl.nodes.node import NodeContext
from redfl.run.build import client_class

__all__ = [
    "Credentials",
    "DeviceError",
    "DeviceOutcome",
    "JobMismatch",
    "ProxyClient",
    "Trainer",
    "check_job",
    "client_name",
    "run",
    "run_device",
]


class DeviceError(RuntimeError):
    """A device cannot go on; the message is one line saying why."""


class JobMismatch(DeviceError):
    """The job runs another device class than this device's."""


@dataclass(frozen=True)
class Credentials:
    """How a device proves who it is: its id and a token issued in advance
    (``redfl edge devices issue``), or the credential it enrols with (``/enroll``)."""

    device_id: str
    token: str = ""
    secret: str = ""

    @classmethod
    def read(cls, path: Path) -> Credentials:
        """Read a credentials file: ``{"device_id": ..., "token": ...}`` or
        ``{"device_id": ..., "secret": ...}``.

        Raises
        ------
        ValueError
            Naming the file and what is wrong.
        """
        data = read_json(path)  # a ConfigError is a ValueError
        if not isinstance(data, dict) or not isinstance(data.get("device_id"), str):
            raise ValueError(f"{path}: expected {{'device_id': ..., 'token' or 'secret': ...}}")
        token, secret = data.get("token", ""), data.get("secret", "")
        if not isinstance(token, str) or not isinstance(secret, str) or not (token or secret):
            raise ValueError(f"{path}: needs a 'token' (issued in advance) or a 'secret' (enrol)")
        return cls(data["device_id"], token, secret)


def client_name(client: type[Any] | str) -> str:
    """``MODULE:CLASS`` of a class (or the string itself)."""
    if isinstance(client, str):
        return client
    return f"{client.__module__}:{client.__qualname__}"


def check_job(job: JobReply, client: str) -> None:
    """Refuse a job that runs another device class than ``client`` (``MODULE:CLASS``; a
    class defined in a script, module ``__main__``, matches by its name).

    Raises
    ------
    JobMismatch
        Naming both classes.
    """
    module, _, name = client.partition(":")
    theirs = job.client.partition(":")[2]
    if job.client == client or (module == "__main__" and name == theirs):
        return
    raise JobMismatch(
        f"job {job.job_id} runs {job.client}; this device runs {client}: "
        "start it with the job's class"
    )


class Trainer:
    """The device's class, built for one job: a task in, a result body out.

    Parameters
    ----------
    template : type
        The device class (a :class:`redfl.nodes.client.Client`).
    job : JobReply
        The job, as ``/job`` described it (its options and seed).
    device_id : str
        The device's id (the node id its ``rng`` draws from).
    options : Mapping[str, Any] | None, default None
        The device's own options, over the job's.
    index, num_devices : int, default 0, 1
        The device's place in the fleet (classes that split a data set use it).
    models : dict[int, tuple[str, dict]] | None, default None
        Decoded task models by version, shared by the trainers of one process (a simulator's
        devices decode each version once).

    Raises
    ------
    ConfigError
        If an option is refused by the class's ``Options`` (naming it).
    """

    def __init__(
        self,
        template: type[Any],
        job: JobReply,
        device_id: str,
        options: Mapping[str, Any] | None = None,
        index: int = 0,
        num_devices: int = 1,
        models: dict[int, tuple[str, dict[str, np.ndarray]]] | None = None,
    ) -> None:
        if not (isinstance(template, type) and issubclass(template, Client)):
            raise ConfigError(f"client: {client_name(template)} is not a redfl Client")
        merged = {**job.options, **(options or {})}
        checked = node_options(template, merged, "options")
        kwargs = checked.model_dump() if isinstance(checked, BaseModel) else dict(checked)
        self.client: Client = template(**kwargs)
        roles: frozenset[Role] = frozenset({"train"})
        context = NodeContext(device_id, roles, job.job_id, job.seed, index, num_devices)
        self.client.bind(context, None)
        self.client.setup()
        self.models = {} if models is None else models
        self.last_traceback = ""

    def train(self, task: Mapping[str, Any]) -> dict[str, Any]:
        """The ``/result`` body of a task (``OK`` reply of ``/task``): the update, or, when
        ``fit`` fails or returns parameters that do not fit the model, the error."""
        body: dict[str, Any] = {"job_id": "", "task_id": task["task_id"]}
        try:
            parameters = self._decoded(int(task["model_version"]), task["parameters"])
            config = Instructions.make(int(task["model_version"]), task.get("config") or {})
            result: tuple[Any, ...] = tuple(
                self.client.fit({k: v.copy() for k, v in parameters.items()}, config)
            )
            if len(result) not in (2, 3):
                raise ValueError("fit must return (parameters, num_examples, metrics)")
            new, examples = result[0], result[1]
            metrics = dict(result[2]) if len(result) == 3 else {}
            problem = check_update(new, parameters)
            if problem is not None:
                raise ValueError(f"fit returned parameters that do not fit the model: {problem}")
            delta = {k: np.asarray(new[k], np.float32) - parameters[k] for k in parameters}
            body["parameters"] = encode_arrays(delta)
            body["num_samples"] = max(1, min(int(examples), 2**31))
            body["metrics"] = {str(k): float(v) for k, v in metrics.items()}
        except Exception as exc:  # the user's code: the task's failure, reported
            body["error"] = f"{type(exc).__name__}: {exc}"[:2_000]
            self.last_traceback = traceback.format_exc()
        return body

    def _decoded(self, version: int, text: str) -> dict[str, np.ndarray]:
        """The task's model, decoded once per version (and text)."""
        known = self.models.get(version)
        if known is None or known[0] != text:
            known = self.models[version] = (text, decode_arrays(text))
            for old in sorted(self.models)[:-8]:
                del self.models[old]
        return known[1]


class ProxyClient:
    """JSON requests to the routing proxy over kept-alive connections, retried (after a
    pause) while the proxy cannot be reached, until a deadline.

    Parameters
    ----------
    proxy : str
        ``http://`` or ``https://host:port``.
    ca : str | None
        The CA file a device trusts for an ``https`` proxy (None: the system's).
    connections : int, default 1
        Connections kept alive.
    """

    def __init__(self, proxy: str, ca: str | None = None, connections: int = 1) -> None:
        url = urlsplit(proxy)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"proxy must be an http(s)://host:port URL, got {proxy!r}")
        tls = ssl.create_default_context(cafile=ca) if url.scheme == "https" else None
        port = url.port or (443 if tls else 80)
        self.pool = LcpConnections(url.hostname, port, connections, timeout=60.0, ssl=tls)
        self.transport_errors = 0

    def fork(self, connections: int = 1) -> ProxyClient:
        """Another client of the same proxy, with its own connections."""
        twin = object.__new__(ProxyClient)
        pool = self.pool
        twin.pool = LcpConnections(pool.host, pool.port, connections, pool.timeout, pool.ssl)
        twin.transport_errors = 0
        return twin

    async def post(
        self, route: str, body: Mapping[str, Any], token: str, deadline: float
    ) -> tuple[int, dict[str, Any]]:
        """POST ``body`` to ``route``; the status and the JSON reply.

        Raises
        ------
        DeviceError
            When the proxy cannot be reached before ``deadline`` (``time.monotonic``).
        """
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        payload = json.dumps(body).encode()
        pause = 0.1
        while True:
            try:
                status, content = await self.pool.post(route, payload, headers)
                data = json.loads(content)
                if isinstance(data, dict):
                    return status, data
            except (ForwardError, ValueError) as exc:
                error = str(exc)
            else:
                error = f"{route}: not a JSON object"
            self.transport_errors += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeviceError(f"the proxy cannot be reached ({error}); gave up at the timeout")
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 2.0)

    def close(self) -> None:
        """Close the connections."""
        self.pool.close()


@dataclass
class DeviceOutcome:
    """What one device did."""

    device_id: str
    job_id: str = ""
    tasks: int = 0
    accepted: int = 0
    rejected: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    version: int = 0
    done: bool = False
    reason: str = ""
    parameters: dict[str, np.ndarray] = field(default_factory=dict)


async def run_device(
    proxy: ProxyClient,
    credentials: Credentials,
    client: type[Any] | str,
    job: str,
    options: Mapping[str, Any] | None = None,
    timeout: float = 600.0,
    max_tasks: int | None = None,
    index: int = 0,
    num_devices: int = 1,
) -> DeviceOutcome:
    """One device's whole life in a job (see the module docstring); :func:`run` in an event
    loop of its own.

    Raises
    ------
    JobMismatch
        If the job runs another class.
    DeviceError
        Refused credentials, an unreachable proxy, no job of that name, the timeout.
    ConfigError
        If the class cannot be imported or refuses the options.
    """
    deadline = time.monotonic() + timeout
    name = client_name(client)
    template = client_class(client, "client") if isinstance(client, str) else client
    token = credentials.token or await _enroll(proxy, credentials, deadline)
    reply = await _find_job(proxy, token, job, deadline)
    check_job(reply, name)
    trainer = Trainer(template, reply, credentials.device_id, options, index, num_devices)
    out = DeviceOutcome(credentials.device_id, reply.job_id)
    while max_tasks is None or out.tasks < max_tasks:
        status, task = await proxy.post("/task", {"job_id": reply.job_id}, token, deadline)
        _refused(status, task, "/task")
        kind = task.get("status")
        if kind == "DONE":
            out.done, out.version, out.reason = True, int(task["model_version"]), task["reason"]
            if task.get("parameters"):
                out.parameters = decode_arrays(task["parameters"])
            return out
        if kind == "NO_JOB":
            raise DeviceError(f"job {reply.job_id} is gone: {task.get('reason')}")
        if kind != "OK":
            await _pause(float(task.get("retry_wait") or 0.5), deadline, job)
            continue
        body = trainer.train(task)
        body["job_id"] = reply.job_id
        out.tasks += 1
        out.version = int(task["model_version"])
        verdict = await _report(proxy, body, token, deadline)
        if "error" in body:
            out.failed.append(body["error"])
        elif verdict.get("status") == "OK":
            out.accepted += 1
        else:
            out.rejected.append(str(verdict.get("reason", "")))
    return out


def run(
    proxy: str,
    credentials: Credentials | Path,
    client: type[Any] | str,
    job: str,
    options: Mapping[str, Any] | None = None,
    *,
    ca: str | None = None,
    timeout: float = 600.0,
    max_tasks: int | None = None,
    index: int = 0,
    num_devices: int = 1,
) -> DeviceOutcome:
    """Run one device of job ``job`` against the routing proxy at ``proxy`` until the job
    ends (or ``max_tasks`` tasks, or ``timeout`` seconds).

    Parameters
    ----------
    proxy : str
        The routing proxy, ``http(s)://host:port``.
    credentials : Credentials | Path
        The device's credentials, or a credentials file (:meth:`Credentials.read`).
    client : type | str
        The device class, or its ``MODULE:CLASS``: the class the job runs.
    job : str
        The job's name.
    options : Mapping[str, Any] | None
        The device's own options, over the job's.
    ca : str | None
        The CA file to trust for an ``https`` proxy.
    timeout : float, default 600
        Seconds before the device gives up (also while the proxy cannot be reached).
    max_tasks : int | None
        Stop after this many tasks.
    index, num_devices : int
        The device's place in the fleet (for classes that split a data set by it).

    Returns
    -------
    DeviceOutcome
        Tasks done, updates accepted, rejected (with reasons) and failed, the last version
        and, when the job ended, the final model.

    Examples
    --------
    ``redfl.edge.device.run("https://proxy:8000", Path("me.json"), MyDevice, "my-job")``
    """
    creds = credentials if isinstance(credentials, Credentials) else Credentials.read(credentials)
    client_pool = ProxyClient(proxy, ca)

    async def main() -> DeviceOutcome:
        try:
            return await run_device(
                client_pool, creds, client, job, options, timeout, max_tasks, index, num_devices
            )
        finally:
            client_pool.close()

    return asyncio.run(main())


def _refused(status: int, reply: Mapping[str, Any], route: str) -> None:
    """Raise for a refusal a device cannot get past by asking again."""
    if status in (400, 401, 403, 413):
        raise DeviceError(f"{route} refused ({status}): {reply.get('reason', reply)}")


async def _enroll(proxy: ProxyClient, credentials: Credentials, deadline: float) -> str:
    body = {"device_id": credentials.device_id, "secret": credentials.secret}
    _, reply = await proxy.post("/enroll", body, "", deadline)
    if reply.get("status") != "OK":
        raise DeviceError(f"enrolment of {credentials.device_id} refused: {reply.get('reason')}")
    return str(reply["token"])


async def _find_job(proxy: ProxyClient, token: str, job: str, deadline: float) -> JobReply:
    """The job of that name, asked for until it exists (or the deadline)."""
    while True:
        status, reply = await proxy.post("/job", {"job_name": job}, token, deadline)
        _refused(status, reply, "/job")
        found = JobReply.model_validate(reply)
        if found.status == "OK":
            return found
        await _pause(found.retry_wait or 0.5, deadline, f"{job} ({found.reason or found.status})")


async def _report(
    proxy: ProxyClient, body: dict[str, Any], token: str, deadline: float
) -> dict[str, Any]:
    """Send a result until it gets a verdict (the same body on ``RETRY``)."""
    while True:
        status, verdict = await proxy.post("/result", body, token, deadline)
        _refused(status, verdict, "/result")
        if verdict.get("status") != "RETRY":
            return verdict
        await _pause(0.2, deadline, str(body.get("job_id")))


async def _pause(seconds: float, deadline: float, job: str) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeviceError(f"job {job}: gave up at the timeout")
    await asyncio.sleep(min(seconds, left))
