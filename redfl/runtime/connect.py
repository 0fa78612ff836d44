"""Joining Ray: a cluster, the warm head, or the embedded instance, within a bounded time.

:func:`ensure_ray` picks, in this order: the cluster at ``address`` (or ``$RAY_ADDRESS``);
the warm local head that ``redfl head start`` keeps between runs (:func:`warm_head_dir`),
when there is one and no address was given; else a new embedded instance
(:mod:`redfl.runtime.embedded`). ``address = "local"`` always starts an embedded instance.

Workers import user code and redfl itself. Ray adds the driver's current folder to every
worker's ``sys.path``, so a folder there named ``redfl`` (the clone's parent, say) would
shadow an editable install of the package on the workers; :func:`worker_path` puts the
folder that holds the imported ``redfl`` package first on the workers' ``PYTHONPATH``,
then the current folder (so a ``client.target`` module beside the config imports there as
on the driver). The embedded instance and a warm head started by the same installation
have it in their environment; a cluster gets it as the job's runtime environment.

A cluster that uses Ray's token authentication needs its token. Ray would retry for 20 s
and print a warning a second before failing; the cluster is asked once instead, and a
missing or refused token is one error that says how to give it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import ray

from redfl.runtime.embedded import (
    AUTH_MODE,
    AUTH_TOKEN,
    AUTH_TOKEN_PATH,
    launch_environment,
    leave_at_exit,
    session_dir,
    start_embedded,
)
from redfl.runtime.jobs import TOKEN_FILE, HeadInfo, read_head

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
"""The folder that holds the imported ``redfl`` package (this module is
``redfl/runtime/connect.py`` in it)."""

DEFAULT_CONNECT_TIMEOUT_S = 30.0
"""How long joining a Ray cluster may take before it is reported as unreachable."""
FAULT_DETECTION = {"timeout_ms_task_wait_for_death_info": 100}
"""Ray settings of the embedded instance: a call to a worker whose process died fails
after 0.1 s instead of 1 s of waiting for the death to be confirmed, so a lost worker is
seen (and re-created) sooner. A cluster started with ``ray start`` keeps its own
settings; ``ray start --system-config='{"timeout_ms_task_wait_for_death_info": 100}'``
gives it the same."""
WARM_HEAD_ENV = "REDFL_HEAD_DIR"
"""Environment variable naming the warm head's folder (default ``~/.redfl/head``)."""
AUTH_PROBE = "/ray.rpc.NodeInfoGcsService/GetClusterId"
"""The cheapest call a Ray GCS answers; it needs the token when the cluster has one."""
GIVE_TOKEN = (
    "give its token with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<token> (or "
    "RAY_AUTH_TOKEN_PATH=<file with the token>); 'ray get-auth-token' on its head prints it"
)


@dataclass(frozen=True)
class RayConnection:
    """What :func:`ensure_ray` joined or started.

    Attributes
    ----------
    kind:
        ``"embedded"`` (a new local instance of this process), ``"head"`` (the warm head),
        ``"cluster"`` (``address``), or ``"existing"`` (Ray was already initialised).
    address:
        The GCS address joined (``None`` for a new or existing instance).
    session_dir:
        The Ray session folder on this machine, where Ray keeps its full logs (``None``
        when Ray was already initialised).
    token:
        The token another process joins it with, when redfl chose it: the embedded
        instance's own and the warm head's (``None`` else: the user's, or none).
    """

    kind: Literal["embedded", "head", "cluster", "existing"]
    address: str | None = None
    session_dir: str | None = None
    token: str | None = field(default=None, repr=False)

    def note(self) -> str | None:
        """What a user should be told about it: joining the warm head (``None`` else)."""
        if self.kind != "head":
            return None
        return f"runs on the warm Ray head at {self.address} ('redfl head stop' ends it)"


def worker_path(with_cwd: bool = True) -> str:
    """The ``PYTHONPATH`` of the workers (see the module doc): the package's folder, then
    (``with_cwd``) the current folder, then this process's ``PYTHONPATH``."""
    paths = [str(PACKAGE_ROOT), os.getcwd() if with_cwd else "", os.environ.get("PYTHONPATH", "")]
    unique = dict.fromkeys(p for part in paths for p in part.split(os.pathsep) if p)
    return os.pathsep.join(unique)


def worker_env() -> dict[str, Any]:
    """The runtime environment of a cluster's workers: :func:`worker_path` as their
    ``PYTHONPATH``."""
    return {"env_vars": {"PYTHONPATH": worker_path()}}


def warm_head_dir() -> Path:
    """The warm head's folder: ``$REDFL_HEAD_DIR``, else ``~/.redfl/head``."""
    return Path(os.environ.get(WARM_HEAD_ENV) or Path.home() / ".redfl" / "head")


def ensure_ray(address: str | None, timeout: float = DEFAULT_CONNECT_TIMEOUT_S) -> RayConnection:
    """Join the cluster at ``address`` (default ``$RAY_ADDRESS``), else the warm head, else
    start the embedded instance (see the module doc).

    When Ray is already initialised in this process, it is used as it is. Whatever was
    joined or started, leaving it at interpreter exit is made fast
    (:func:`redfl.runtime.embedded.leave_at_exit`): Ray's own exit handler sleeps 0.5 s first.

    Raises
    ------
    ConnectionError
        If the cluster (or warm head) cannot be reached within ``timeout`` seconds, or it
        wants an authentication token that was not given or that it refuses.
    """
    connection = _connect(address, timeout)
    leave_at_exit()
    return connection


def _connect(address: str | None, timeout: float) -> RayConnection:
    """What :func:`ensure_ray` joins or starts (see there)."""
    if ray.is_initialized():
        return RayConnection("existing")
    address = address or os.environ.get("RAY_ADDRESS")
    if address is None or address == "":
        head = read_head(warm_head_dir())
        if head is not None:
            return _join_head(head, timeout)
    if address in (None, "", "local"):
        session, token = start_embedded(worker_path(), FAULT_DETECTION)
        return RayConnection("embedded", None, session, token)
    assert address is not None
    _check_reachable(address, timeout)
    _check_token(address, timeout, _token_sent())
    session = _join(address, {}, worker_env())
    return RayConnection("cluster", address, session)


def _join_head(head: HeadInfo, timeout: float) -> RayConnection:
    """Join the warm head with its token; its workers need no runtime environment when
    the head was started by this installation with this ``PYTHONPATH``."""
    same = head.worker_path == worker_path(with_cwd=False)
    try:
        token = (warm_head_dir() / TOKEN_FILE).read_text(encoding="ascii").strip()
        _check_reachable(head.address, timeout)
        _check_token(head.address, timeout, token)
    except (OSError, ConnectionError) as error:
        raise ConnectionError(
            f"the warm Ray head in {warm_head_dir()} does not answer ({error}); "
            f"'redfl head stop' ends it"
        ) from None
    auth = {AUTH_MODE: "token", AUTH_TOKEN: token}
    session = _join(head.address, auth, None if same else worker_env())
    return RayConnection("head", head.address, session, token)


def _join(address: str, env: Mapping[str, str], runtime_env: dict[str, Any] | None) -> str | None:
    """``ray.init(address)``; the session folder on this machine, if any.

    The cluster has answered :func:`_check_token` (for ``host:port`` addresses), so this
    runs on the calling thread, where Ray sets its SIGTERM handler (an orderly exit).
    """
    with launch_environment(env):
        try:
            context = ray.init(
                address=address, logging_level=logging.WARNING, runtime_env=runtime_env
            )
        except Exception as error:  # Ray raises ConnectionError, RuntimeError, ValueError
            message = " ".join(str(error).split())
            raise ConnectionError(
                f"could not join the Ray cluster at {address}: {message}"
            ) from error
    return session_dir(context)


def _check_reachable(address: str, timeout: float) -> None:
    """Fail at once when nothing listens at ``host:port`` (``auto`` is left to Ray)."""
    target = _gcs_target(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=min(timeout, 5)):
            pass
    except OSError as error:
        raise ConnectionError(
            f"cannot reach the Ray cluster at {address}: {error.strerror or error}"
        ) from None


def _gcs_target(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a GCS address; ``None`` for ``auto`` and Ray Client addresses
    (``ray://``), which Ray resolves and authenticates itself."""
    if address == "auto" or address.startswith("ray://"):
        return None
    parsed = urlparse(f"gcs://{address}")
    if parsed.hostname is None or parsed.port is None:
        return None
    return parsed.hostname, parsed.port


def _token_sent() -> str | None:
    """The token Ray will send: with ``RAY_AUTH_MODE=token``, ``$RAY_AUTH_TOKEN``, else the
    file ``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token`` (``None`` without one)."""
    if os.environ.get(AUTH_MODE, "").lower() != "token":
        return None
    if os.environ.get(AUTH_TOKEN):
        return os.environ[AUTH_TOKEN].strip()
    path = Path(os.environ.get(AUTH_TOKEN_PATH) or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _check_token(address: str, timeout: float, token: str | None) -> None:
    """Ask the GCS at ``address`` once, within ``timeout`` seconds, whether it accepts
    ``token`` (or no token).

    Raises
    ------
    ConnectionError
        When no Ray GCS answers there, or (saying how to give the cluster's token) when it
        wants a token that was not given or refuses the one given.
    """
    import grpc

    target = _gcs_target(address)
    if target is None:
        return
    metadata = None if token is None else [("authorization", f"Bearer {token}")]
    host, port = target
    with grpc.insecure_channel(f"[{host}]:{port}" if ":" in host else f"{host}:{port}") as channel:
        try:
            channel.unary_unary(AUTH_PROBE)(b"", timeout=timeout, metadata=metadata)
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ConnectionError(
                    f"could not join the Ray cluster at {address} within {timeout:g} s "
                    f"(is a Ray head running there? start one with 'ray start --head')"
                ) from None
            if code != grpc.StatusCode.UNAUTHENTICATED:
                raise ConnectionError(
                    f"the service at {address} does not answer as a Ray cluster's GCS "
                    f"({code.name}: {' '.join(str(error.details()).split())})"
                ) from None
            if token is None:
                raise ConnectionError(
                    f"the Ray cluster at {address} uses token authentication: {GIVE_TOKEN}"
                ) from None
            raise ConnectionError(
                f"the Ray cluster at {address} refused the authentication token given "
                f"(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token): {GIVE_TOKEN}"
            ) from None


def cluster_machines() -> list[dict[str, float]]:
    """Each live machine's total resources in the cluster this process has joined."""
    nodes = ray.nodes()  # type: ignore[no-untyped-call]
    return [{k: float(v) for k, v in n["Resources"].items()} for n in nodes if n.get("Alive")]
