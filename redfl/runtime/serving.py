"""Served models on Ray Serve: one application per model, its replicas, its HTTP route.

A model is deployed from a :class:`ModelPayload` (plain data: the client class that
trained it, its options and the model file's bytes): each replica
(:class:`~redfl.runtime.serving_replica.ModelReplica`) imports that class, finds its predict
hook and answers requests, with Ray Serve's request batching in front of the model. Its
settings (limits, batching, token key,
revoked tokens) are the deployment's ``user_config``: every replica, including one Ray
Serve starts to replace a lost one, gets them in ``reconfigure``.

The application is named after the deployment and served under ``/<name>`` by Ray
Serve's HTTP proxies (:func:`start_http` sets where they listen, once per cluster), or on
no route at all, for a caller inside the cluster (:func:`answer`).

Functions here take plain arguments; :mod:`redfl.run.serving` deploys a run folder with
them, and the platform can too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from redfl.runtime.serving_requests import Answer, ModelPayload, ServingSettings

if TYPE_CHECKING:
    from redfl.runtime.connect import RayConnection

__all__ = [
    "DEPLOYMENT",
    "DeploymentState",
    "HttpOptions",
    "ModelPayload",
    "Scaling",
    "answer",
    "cluster_address",
    "deploy",
    "deployment_states",
    "join",
    "remove",
    "start_http",
]

DEPLOYMENT = "redfl-model"
"""The name of a served model's deployment inside its application (how the applications
of served models are told from others on the cluster)."""
HEALTH_CHECK_S = 2.0
"""Seconds between Ray Serve's checks of each replica (its default is 10): a replica whose
process died is replaced that much sooner."""
LOGGING = {"log_level": "WARNING", "enable_access_log": False}
"""Ray Serve's logging for the proxies and the replicas: warnings and errors only, no line
per request (an access log line costs more CPU than answering a small model's request)."""
CONSTRUCTOR_RETRIES = 3
"""Times Ray Serve retries a replica whose constructor fails (the model was checked before
it was deployed, so a failure here is the cluster's: code that does not import there)."""


def _ray() -> ModuleType:
    """Ray, imported on first use (as Ray Serve, and the modules that join Ray): importing
    them takes seconds, which a command that serves nothing should not pay."""
    import ray

    return ray


def _serve() -> ModuleType:
    """Ray Serve, imported on first use (see :func:`_ray`)."""
    from ray import serve

    return serve


@dataclass(frozen=True)
class Scaling:
    """How many replicas, and what each reserves.

    Attributes
    ----------
    replicas:
        A fixed number of replicas (when ``autoscale`` is ``None``).
    autoscale:
        ``(min, max)`` replicas: Ray Serve adds replicas while more than ``max_batch / 2``
        requests per replica are under way, and removes them when fewer are.
    replica_cpus:
        CPUs each replica reserves.
    """

    replicas: int = 1
    autoscale: tuple[int, int] | None = None
    replica_cpus: float = 1.0


@dataclass(frozen=True)
class HttpOptions:
    """Where Ray Serve's HTTP proxies listen (one setting for the whole cluster).

    ``tls_cert`` and ``tls_key`` (PEM files on the proxies' machines) make it HTTPS.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    tls_cert: str | None = None
    tls_key: str | None = None


@dataclass(frozen=True)
class DeploymentState:
    """A served model as Ray Serve reports it: its status and replicas by state."""

    name: str
    status: str
    replicas: dict[str, int]
    message: str = ""

    @property
    def running(self) -> int:
        """Replicas answering requests."""
        return self.replicas.get("RUNNING", 0)


def start_http(options: HttpOptions) -> str:
    """Start Ray Serve on the connected cluster, its proxies listening as ``options`` say,
    and return the base URL they answer on.

    Ray Serve's HTTP settings are the cluster's: when Serve already runs there, they stay
    as they are, and the URL returned is theirs.
    """
    http: dict[str, Any] = {"host": options.host, "port": options.port}
    if options.tls_cert is not None:
        http |= {"ssl_certfile": options.tls_cert, "ssl_keyfile": options.tls_key}
    _serve().start(http_options=http, logging_config=LOGGING)
    actual = _http_options()
    host = str(actual.get("host") or options.host)
    if host in ("0.0.0.0", "::"):
        host = str(_ray().util.get_node_ip_address())
    scheme = "https" if actual.get("ssl_certfile") else "http"
    return f"{scheme}://{host}:{actual.get('port', options.port)}"


def _http_options() -> dict[str, Any]:
    """The HTTP settings Ray Serve runs with (read from its controller, as ``serve.status``
    reads the rest)."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return {}
    details: dict[str, Any] = client.get_serve_details()
    options: dict[str, Any] = details.get("http_options") or {}
    return options


def deploy(
    payload: ModelPayload,
    settings: ServingSettings,
    scaling: Scaling,
    *,
    http: bool = True,
    runtime_env: dict[str, Any] | None = None,
) -> None:
    """Deploy (or redeploy) ``payload`` as the application ``payload.name``; return once
    its replicas run.

    Deploying again under the same name replaces the replicas one by one (Ray Serve's
    rolling update), with the new settings.

    Parameters
    ----------
    http:
        Serve it under ``/<name>`` on Ray Serve's proxies; ``False``: only
        :func:`answer` reaches it.
    runtime_env:
        The replicas' runtime environment (default: this driver's, which imports redfl
        and the current folder's modules).

    Raises
    ------
    RuntimeError
        If Ray Serve cannot start the replicas (the message is Ray Serve's).
    """
    options: dict[str, Any] = {
        "name": DEPLOYMENT,
        "ray_actor_options": {
            "num_cpus": scaling.replica_cpus,
            "runtime_env": _worker_env() if runtime_env is None else runtime_env,
        },
        "user_config": settings.model_dump(mode="json"),
        "max_ongoing_requests": max(8, 2 * settings.max_batch),
        "max_constructor_retry_count": CONSTRUCTOR_RETRIES,
        "health_check_period_s": HEALTH_CHECK_S,
        "logging_config": LOGGING,
    }
    if scaling.autoscale is None:
        options["num_replicas"] = scaling.replicas
    else:
        low, high = scaling.autoscale
        options["autoscaling_config"] = {
            "min_replicas": low,
            "initial_replicas": max(low, 1),
            "max_replicas": high,
            "target_ongoing_requests": max(1, settings.max_batch // 2),
        }
    from redfl.runtime.serving_replica import ModelReplica

    serve = _serve()
    application = serve.deployment(**options)(ModelReplica).bind(payload)
    route = f"/{payload.name}" if http else None
    serve.run(application, name=payload.name, route_prefix=route, blocking=False)


def deployment_states() -> dict[str, DeploymentState]:
    """The served models on the connected cluster, by name (empty when Serve is not
    running)."""
    states = {}
    for name, application in _serve().status().applications.items():
        deployment = application.deployments.get(DEPLOYMENT)
        if deployment is None:  # another application on the same cluster
            continue
        replicas = {
            str(getattr(k, "value", k)): int(v) for k, v in deployment.replica_states.items()
        }
        message = application.message or deployment.message or ""
        status = str(getattr(application.status, "value", application.status))
        states[name] = DeploymentState(name, status, replicas, message)
    return states


def remove(name: str) -> bool:
    """Delete the served model ``name`` and its replicas; whether there was one."""
    if name not in deployment_states():
        return False
    _serve().delete(name)
    return True


def answer(name: str, body: bytes, timeout: float = 30.0) -> Answer:
    """Send a predict body (``{"inputs": [...]}``) to the served model ``name`` from inside
    the cluster, and return its answer.

    Raises
    ------
    KeyError
        If no served model is called ``name``.
    TimeoutError
        If no answer came within ``timeout`` seconds.
    """
    if name not in deployment_states():
        raise KeyError(f"no served model named {name!r}")
    handle = _serve().get_app_handle(name)
    try:
        reply: Answer = handle.answer.remote(body).result(timeout_s=timeout)
    except TimeoutError:
        raise TimeoutError(f"served model {name!r}: no answer within {timeout:g} s") from None
    return reply


def join(
    address: str | None, timeout: float, local: bool = False, token: str | None = None
) -> RayConnection | None:
    """Connect this process to Ray: the cluster at ``address`` (default ``$RAY_ADDRESS``),
    else the warm head, else the embedded instance
    (:func:`redfl.runtime.connect.ensure_ray`); what it joined or started (``None`` when
    this process was connected already). An embedded instance (kind ``"embedded"``) ends,
    with what is served on it, with this process; its ``token`` is how another process
    joins it.

    A no-op when this process is connected already (to that cluster).

    ``token`` is the token of the cluster at ``address`` (another process's embedded
    instance, or the warm head). Without it, ``local=True`` says the cluster at ``address``
    is another process's embedded instance on this machine: Ray then authenticates as it
    does for a local cluster it finds itself (with this machine's Ray token, when there is
    one), which it does not for an address it is given.

    Raises
    ------
    ConnectionError
        If the cluster cannot be reached within ``timeout`` seconds, or this process is
        connected to another cluster.
    """
    if _ray().is_initialized():
        here = cluster_address()
        if address is not None and re.fullmatch(r"[^\s:/]+:\d+", address) and address != here:
            raise ConnectionError(
                f"this process is connected to the Ray cluster at {here}, not {address}"
            )
        return None
    from redfl.runtime.connect import ensure_ray
    from redfl.runtime.embedded import AUTH_MODE, AUTH_TOKEN, launch_environment

    if token is not None:
        with launch_environment({AUTH_MODE: "token", AUTH_TOKEN: token}):
            return ensure_ray(address, timeout)
    if local:
        _local_cluster_auth()
    return ensure_ray(address, timeout)


def _local_cluster_auth() -> None:
    """Ray's own rule for joining a local cluster it finds: token authentication when this
    machine has a Ray token (a Ray without token authentication has no such rule)."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def cluster_address() -> str:
    """The address of the Ray cluster this process is connected to (its GCS), as another
    process would join it."""
    return str(_ray().get_runtime_context().gcs_address)


def _worker_env() -> dict[str, Any]:
    from redfl.runtime.connect import worker_env

    return worker_env()
