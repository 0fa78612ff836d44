"""Serving a run folder's model on Ray Serve: deploy, list, stop, tokens, predict.

A run folder holds everything needed to serve its model: ``model.safetensors`` (whose
metadata names the client class that trained it and its options; for an older folder,
``config.json`` does). :func:`load_run` imports that class and finds its predict hook
(:func:`redfl.nodes.predict.find_predictor`); **serving a folder runs its code**, as
running its config does. :func:`deploy_run` checks the model answers with its own
parameters, then deploys it (:mod:`redfl.runtime.serving`) behind bearer tokens signed by a
key of its own and writes its record (:mod:`redfl.run.deployments`).

Every function takes plain arguments and raises :class:`~redfl.core.config.ConfigError`
(bad input, naming it) or :class:`ConnectionError` (Ray cannot be reached), so that the
command line (``redfl model``) and a server can call them alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, ValidationError, ValidationInfo, field_validator

from redfl.core.arrays import Parameters
from redfl.core.config import ConfigError, Strict, describe_errors
from redfl.nodes.predict import Predictor, find_predictor
from redfl.run.build import ConfigParts
from redfl.run.config import RunConfig, parse_config
from redfl.run.deployments import (
    KEY_FILE,
    MODEL_FILE,
    NAME_PATTERN,
    RAY_TOKEN_FILE,
    TOKEN_FILE,
    DeploymentRecord,
    DeploymentStore,
    TokenEntry,
)
from redfl.run.folder import load_parameters
from redfl.run.prepare import saved_config
from redfl.runtime.serving import (
    DeploymentState,
    HttpOptions,
    ModelPayload,
    Scaling,
    answer,
    cluster_address,
    deploy,
    deployment_states,
    join,
    remove,
    start_http,
)
from redfl.runtime.serving_requests import Answer, ServingSettings, body_limit
from redfl.runtime.serving_tokens import IssuedToken, TokenKey

__all__ = [
    "DAY",
    "Deployed",
    "DeploymentView",
    "ServeOptions",
    "ServedRun",
    "default_name",
    "deploy_run",
    "issue_token",
    "list_deployments",
    "load_run",
    "predict",
    "predict_body",
    "revoke_tokens",
    "stop_deployment",
    "wait_while_served",
]

DAY = 86_400.0
"""Seconds in a day (token lifetimes are given in days)."""


class ServeOptions(Strict):
    """How to serve a model: name, replicas, batching, limits, HTTP, cluster, tokens."""

    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    """The deployment's name (default: from the run folder's name)."""
    replicas: int | None = Field(default=None, ge=1, le=1024)
    """A fixed number of replicas (default 1; not with ``autoscale``)."""
    autoscale: str | None = Field(default=None, pattern=r"^\d{1,4}:\d{1,4}$")
    """``"MIN:MAX"`` replicas, scaled by Ray Serve on the requests under way."""
    max_batch: int = Field(default=16, ge=1, le=1024)
    """Requests a replica predicts together at most."""
    batch_wait_s: float = Field(default=0.002, ge=0.0, le=1.0)
    """Seconds a batch waits for more requests after its first one."""
    max_rows: int = Field(default=1024, ge=1, le=1_000_000)
    """Rows one request may hold."""
    replica_cpus: float = Field(default=1.0, gt=0.0, le=256.0)
    """CPUs each replica reserves."""
    host: str = Field(default="127.0.0.1", min_length=1)
    """Where Ray Serve's HTTP proxies listen (a cluster-wide setting: the first deployment
    on a cluster decides)."""
    port: int = Field(default=8000, ge=1, le=65535)
    tls_cert: str | None = None
    """PEM certificate (and ``tls_key``) for HTTPS."""
    tls_key: str | None = Field(default=None, validate_default=True)
    http: bool = True
    """Serve over HTTP with tokens; ``False``: only from inside the cluster (:func:`predict`)."""
    address: str | None = None
    """The Ray cluster (default: ``$RAY_ADDRESS``, else the embedded instance)."""
    connect_timeout: float = Field(default=30.0, gt=0.0, le=3600.0)
    token_days: float = Field(default=30.0, gt=0.0, le=3650.0)
    """Lifetime of the token printed on deployment."""

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        try:  # the same forms as federation.address
            RunConfig(address=value)
        except ValidationError as error:
            raise ValueError(error.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return value

    @field_validator("autoscale")
    @classmethod
    def _autoscale(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if info.data.get("replicas") is not None:
            raise ValueError("give replicas or autoscale, not both")
        low, high = (int(n) for n in value.split(":"))
        if not 1 <= high <= 1024 or low > high:
            raise ValueError("must be MIN:MAX with 0 <= MIN <= MAX and 1 <= MAX <= 1024")
        return value

    @field_validator("tls_cert", "tls_key")
    @classmethod
    def _tls_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError("no such file")
        if info.field_name == "tls_key" and (value is None) != (info.data.get("tls_cert") is None):
            raise ValueError("tls_cert and tls_key go together")
        return value

    @classmethod
    def of(cls, **values: Any) -> ServeOptions:
        """Validated options; ``None`` values are left at their defaults.

        Raises
        ------
        ConfigError
            Naming the bad option and what is allowed.
        """
        try:
            return cls.model_validate({k: v for k, v in values.items() if v is not None})
        except ValidationError as error:
            raise ConfigError(describe_errors(error)) from None

    def scaling(self) -> Scaling:
        """The replicas these options ask for."""
        if self.autoscale is None:
            return Scaling(self.replicas or 1, None, self.replica_cpus)
        low, high = (int(n) for n in self.autoscale.split(":"))
        return Scaling(low, (low, high), self.replica_cpus)


@dataclass(frozen=True)
class ServedRun:
    """A run folder's model, ready to serve.

    Attributes
    ----------
    folder:
        The run folder.
    client:
        ``{"target": ..., "options": ...}`` as the run recorded them.
    options:
        The options as the class's ``Options`` model validates them (its defaults filled).
    model:
        The model file's bytes.
    parameters, metadata:
        What the model file holds.
    predictor:
        The class's predict hook.
    """

    folder: Path
    client: dict[str, Any]
    options: dict[str, Any]
    model: bytes
    parameters: Parameters
    metadata: dict[str, Any]
    predictor: Predictor

    def payload(self, name: str) -> ModelPayload:
        """What the replicas of deployment ``name`` need."""
        info = {
            "run": self.folder.name,
            "model": self.client["target"],
            "rounds": self.metadata.get("rounds"),
            "accuracy": self.metadata.get("accuracy"),
        }
        return ModelPayload(name, self.client["target"], self.options, self.model, info)


@dataclass(frozen=True)
class Deployed:
    """A deployment just made: its record, the token printed once, its URL."""

    record: DeploymentRecord
    token: IssuedToken

    @property
    def url(self) -> str | None:
        """Its predict URL (``None`` when not served over HTTP)."""
        return None if self.record.url is None else f"{self.record.url}/predict"


@dataclass(frozen=True)
class DeploymentView:
    """A deployment as :func:`list_deployments` sees it.

    Attributes
    ----------
    name:
        Its name.
    record:
        Its record (``None``: on the cluster, not recorded in this home).
    state:
        What Ray Serve reports (``None``: not found, or its cluster was not reached).
    note:
        Why there is no state, when there is none.
    """

    name: str
    record: DeploymentRecord | None
    state: DeploymentState | None
    note: str = ""


def load_run(
    folder: str | Path,
    allowed_prefixes: Sequence[str] | None = None,
    client: Mapping[str, Any] | None = None,
    model_file: str | Path | None = None,
) -> ServedRun:
    """The model of run folder ``folder``, its class imported and its hook checked.

    Parameters
    ----------
    allowed_prefixes:
        When given, the modules the client class may come from (checked before importing).
    client:
        The class and options (default: the model file's metadata, else ``config.json``).
    model_file:
        The model file (default ``folder/model.safetensors``).

    Raises
    ------
    ConfigError
        The folder has no model, the class does not import or offers no predict hook, its
        options are refused, or it fails to predict with the model's parameters.
    """
    folder = Path(folder)
    path = Path(model_file) if model_file is not None else folder / "model.safetensors"
    if not folder.is_dir():
        raise ConfigError(f"run folder: {folder} is not a folder")
    if not path.is_file():
        raise ConfigError(f"run folder: {folder} has no model.safetensors (written after a round)")
    try:
        data = path.read_bytes()
        parameters, metadata = load_parameters(path)
    except Exception as error:  # safetensors' own errors: a file that is not a model
        raise ConfigError(f"{path}: not a model file: {error}") from None
    if client is None:
        recorded = metadata.get("client")
        if isinstance(recorded, dict):
            client = recorded
        else:  # a folder written before model files named their class
            table = saved_config(folder).client
            client = {"target": table.target, "options": table.options}
    recorded_client = {"target": client.get("target"), "options": client.get("options") or {}}
    config = parse_config({"client": {**recorded_client, "num_clients": 1}})
    parts = ConfigParts(config, allowed_prefixes=allowed_prefixes)
    template, options = parts.template(), parts.options
    target = config.client.target
    try:
        predictor = find_predictor(template, options)
    except ValueError as error:
        raise ConfigError(f"client.target: {error}") from None
    except Exception as error:  # the class's constructor: user code
        raise ConfigError(f"client.target: building {target} failed: {error}") from None
    if predictor.input_shape is not None:
        try:
            predictor(parameters, np.zeros((1, *predictor.input_shape)))
        except Exception as error:
            raise ConfigError(
                f"{path}: {predictor.source}.predict fails with the model's own parameters: "
                f"{type(error).__name__}: {error}"
            ) from None
    return ServedRun(folder, recorded_client, options, data, parameters, metadata, predictor)


def default_name(folder: str | Path) -> str:
    """A deployment name made from a run folder's name."""
    text = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(folder).resolve().name).strip("-._")
    return text[:64].rstrip("-._") or "model"


def deploy_run(
    folder: str | Path,
    options: ServeOptions | None = None,
    *,
    home: str | Path | None = None,
    allowed_prefixes: Sequence[str] | None = None,
) -> Deployed:
    """Serve the model of run folder ``folder`` on Ray Serve; return once it answers.

    Joins Ray (``options.address``, else ``$RAY_ADDRESS``, else the warm head, else the
    embedded instance, which ends with this process), starts Ray Serve's HTTP proxies,
    deploys the model, issues its first token and records it all in ``home``
    (:class:`DeploymentStore`), with the token of the Ray instance when redfl chose it.

    Raises
    ------
    ConfigError
        A bad folder or model (:func:`load_run`), or the name is taken (here or on the
        cluster).
    ConnectionError
        The Ray cluster cannot be joined.
    RuntimeError
        Ray Serve could not start the replicas (the record is removed).
    """
    options = options or ServeOptions()
    served = load_run(folder, allowed_prefixes)
    name = options.name or default_name(folder)
    store = DeploymentStore(home)
    store.check_free(name)
    joined = join(options.address, options.connect_timeout)
    if name in deployment_states():
        raise ConfigError(f"name: a model named {name} is served on this cluster already")
    key = TokenKey.generate()
    token = key.issue(name, options.token_days * DAY)
    url = None
    if options.http:
        http = HttpOptions(options.host, options.port, options.tls_cert, options.tls_key)
        url = f"{start_http(http)}/{name}"
    store.create(name)
    store.write_secret(name, KEY_FILE, key.to_pem())
    if joined is not None and joined.token is not None:
        store.write_secret(name, RAY_TOKEN_FILE, (joined.token + "\n").encode())
    store.write_secret(name, MODEL_FILE, served.model)
    record = DeploymentRecord(
        name=name,
        run=str(served.folder.resolve()),
        client=served.client,
        url=url,
        address=cluster_address(),
        embedded=joined is not None and joined.kind == "embedded",
        pid=os.getpid(),
        created=time.time(),
        options=options.model_dump(),
        tokens=(TokenEntry(id=token.token_id, expires_at=token.expires_at),),
    )
    try:
        deploy(served.payload(name), _settings(options, served, record, key), options.scaling())
    except BaseException:
        store.remove(name)
        with contextlib.suppress(Exception):  # what Ray Serve made of it, if anything
            remove(name)
        raise
    store.write_secret(name, TOKEN_FILE, (token.token + "\n").encode())
    store.save(record)
    return Deployed(record, token)


def _settings(
    options: ServeOptions, served: ServedRun, record: DeploymentRecord, key: TokenKey
) -> ServingSettings:
    return ServingSettings(
        max_rows=options.max_rows,
        max_body_bytes=body_limit(options.max_rows, served.predictor.input_shape),
        max_batch=options.max_batch,
        batch_wait_s=options.batch_wait_s,
        public_key=key.public_pem() if options.http else None,
        revoked=record.revoked(time.time()),
    )


def wait_while_served(name: str, stop: threading.Event, poll: float = 1.0) -> bool:
    """Block until ``stop`` is set or the served model ``name`` is gone (stopped from
    another process); whether it is gone."""
    while not stop.wait(poll):
        if name not in deployment_states():
            return True
    return False


def list_deployments(
    home: str | Path | None = None, address: str | None = None, timeout: float = 30.0
) -> list[DeploymentView]:
    """The recorded deployments with what Ray Serve reports of each, by name.

    The cluster asked is ``address``, else the one this process is connected to, else the
    one the live records name (the first, when they name several: the others are listed
    with a note). With ``address``, served models on that cluster without a record here are
    listed too. An embedded deployment whose process has ended is listed as such, without
    joining anything.
    """
    store = DeploymentStore(home)
    records = store.records()
    views: dict[str, DeploymentView] = {}
    live = []
    for record in records:
        if record.embedded and not _alive(record.pid):
            note = f"ended with its process (pid {record.pid}); redfl model stop removes it"
            views[record.name] = DeploymentView(record.name, record, None, note)
        else:
            live.append(record)
    where, local = address, False
    if where is None and live:
        where, local = live[0].address, live[0].embedded
    if address is not None or live:
        token = _ray_token(store, live[0].name) if address is None else None
        join(where, timeout, local, token)
        here = cluster_address()
        states = deployment_states()
        for record in live:
            state = states.get(record.name) if record.address == here else None
            if record.address != here:
                note = f"on another Ray cluster ({record.address}): list with --address"
            else:
                note = "" if state is not None else "not on its cluster (stopped or lost)"
            views[record.name] = DeploymentView(record.name, record, state, note)
        if address is not None:
            for name, state in states.items():
                views.setdefault(name, DeploymentView(name, None, state, "no record here"))
    return [views[name] for name in sorted(views)]


def stop_deployment(
    name: str, home: str | Path | None = None, address: str | None = None, timeout: float = 30.0
) -> str:
    """Stop the served model ``name`` and remove its record; a line saying what was done.

    A model served on another process's embedded Ray instance is stopped by that process:
    it is sent SIGTERM, and this returns once it removed the model and its record (its Ray
    instance ends with it).

    Raises
    ------
    ConfigError
        If there is neither a record nor (on ``address``) a served model of that name.
    ConnectionError
        If its cluster cannot be reached (the record is kept), or the serving process did
        not stop within ``timeout`` seconds.
    """
    store = DeploymentStore(home)
    record = store.load(name) if store.exists(name) or address is None else None
    if record is not None and record.embedded and record.pid != os.getpid():
        if not _alive(record.pid):
            store.remove(name)
            return f"{name} was not running (its process {record.pid} ended); record removed"
        os.kill(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while store.exists(name) and _alive(record.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if store.exists(name) and _alive(record.pid):
            raise ConnectionError(
                f"the process serving {name} (pid {record.pid}) did not stop within {timeout:g} s"
            )
        store.remove(name)
        return f"stopped {name}"
    if address is None and record is not None:
        join(record.address, timeout, record.embedded, _ray_token(store, name))
    else:
        join(address, timeout)
    removed = remove(name)
    if record is None and not removed:
        raise ConfigError(f"no deployment named {name} here or on the cluster")
    store.remove(name)
    return f"stopped {name}" if removed else f"{name} was not on its cluster; record removed"


def issue_token(name: str, days: float = 30.0, home: str | Path | None = None) -> IssuedToken:
    """A new token for deployment ``name`` (valid ``days`` days), recorded by its id.

    Raises
    ------
    ConfigError
        No such deployment, or ``days`` out of (0, 3650].
    """
    if not 0 < days <= 3650:
        raise ConfigError(f"days: must be > 0 and <= 3650 (got {days})")
    store = DeploymentStore(home)
    record = store.load(name)
    key = TokenKey.from_pem(store.read_secret(name, KEY_FILE))
    token = key.issue(name, days * DAY)
    entry = TokenEntry(id=token.token_id, expires_at=token.expires_at)
    store.save(record.model_copy(update={"tokens": (*record.tokens, entry)}))
    return token


def revoke_tokens(
    name: str,
    token_ids: Sequence[str] = (),
    *,
    every: bool = False,
    days: float = 30.0,
    home: str | Path | None = None,
    timeout: float = 30.0,
) -> IssuedToken | None:
    """Revoke tokens of deployment ``name``; return once every replica refuses them.

    The replicas get the revoked ids with their settings (Ray Serve replaces them one by
    one). ``every=True`` makes a new signing key instead, which revokes every token issued
    so far, and returns a new token (valid ``days`` days).

    Raises
    ------
    ConfigError
        No such deployment, nothing to revoke, or an id that is not one of its tokens.
    ConnectionError
        Its cluster cannot be reached (nothing is changed).
    """
    store = DeploymentStore(home)
    record = store.load(name)
    known = {t.id for t in record.tokens}
    unknown = [i for i in token_ids if i not in known]
    if unknown:
        raise ConfigError(
            f"token id {unknown[0]}: not a token of {name} (its tokens: {', '.join(sorted(known))})"
        )
    if not token_ids and not every:
        raise ConfigError("give the ids of the tokens to revoke, or revoke every token")
    options = ServeOptions.model_validate(record.options)
    tokens = tuple(
        t.model_copy(update={"revoked": True}) if every or t.id in token_ids else t
        for t in record.tokens
    )
    key = TokenKey.from_pem(store.read_secret(name, KEY_FILE))
    issued = None
    if every:
        key = TokenKey.generate()
        issued = key.issue(name, days * DAY)
        tokens = (*tokens, TokenEntry(id=issued.token_id, expires_at=issued.expires_at))
    record = record.model_copy(update={"tokens": tokens})
    served = load_run(record.run, client=record.client, model_file=store.folder(name) / MODEL_FILE)
    join(record.address, timeout, record.embedded, _ray_token(store, name))
    if name not in deployment_states():
        raise ConfigError(f"{name} is not served on its cluster ({record.address})")
    deploy(served.payload(name), _settings(options, served, record, key), options.scaling())
    if every:
        store.write_secret(name, KEY_FILE, key.to_pem())
    store.save(record)
    return issued


def predict(
    name: str, inputs: Any, timeout: float = 30.0, address: str | None = None
) -> np.ndarray:
    """The outputs of served model ``name`` for ``inputs`` (rows of numbers), asked from
    inside its cluster (no token), through the same checks and batching as over HTTP.

    Raises
    ------
    ValueError
        The inputs were refused (``"422: <reason>"``).
    RuntimeError
        The model failed (``"500: <reason>"``).
    KeyError
        No served model is called ``name``.
    """
    rows = np.asarray(inputs).tolist()
    return predict_body(name, json.dumps({"inputs": rows}).encode(), timeout, address).outputs()


def predict_body(
    name: str, body: bytes, timeout: float = 30.0, address: str | None = None
) -> Answer:
    """The answer of served model ``name`` to a predict body (``{"inputs": [...]}``), asked
    from inside its cluster: a server that fronts it with its own authentication passes its
    callers' bodies through this.

    Raises
    ------
    KeyError
        No served model is called ``name``.
    """
    join(address, timeout)
    return answer(name, body, timeout)


def _ray_token(store: DeploymentStore, name: str) -> str | None:
    """The token of the Ray instance that deployment ``name`` runs on, when redfl chose it
    (``None`` else)."""
    if not (store.folder(name) / RAY_TOKEN_FILE).is_file():
        return None
    return store.read_secret(name, RAY_TOKEN_FILE).decode("ascii").strip()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie, ended but not yet reaped by its
    parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc: trust the signal
        return True
    return state != "Z"
