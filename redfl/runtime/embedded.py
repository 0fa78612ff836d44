"""The embedded Ray instance: started quietly with a token of its own, and stopped fast.

Starting (:func:`start_embedded`). Ray 2.60 turns on token authentication for a new local
instance, writes a token to ``~/.ray/auth_token`` and prints a warning about it on every
run. The embedded instance gets a fresh random token of its own instead
(``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``): its processes receive it in their
environment when they start, this process keeps it in Ray's token cache, and it is removed
from ``os.environ`` again once Ray has started (a subprocess the user starts later does not
inherit it). Nothing is written to the home folder and Ray prints no warning. A
``RAY_AUTH_MODE`` the user set is left as it is.

Ray's dashboard head and agent start as a minimal Ray installation starts them (the one
``make run`` installs: no metrics, no web front end), also where the dashboard's extra
packages are installed (the platform extra brings them): the raylet waits for the agent
before it registers, and the full agent, which loads the metrics and web packages, comes up
later (``docs/benchmarks.md``). Ray decides by importing ``ray.dashboard.optional_deps``;
that import fails while the instance starts.

Workers find redfl and the user's modules through ``PYTHONPATH`` in the instance's
environment rather than through a runtime environment: the workers that Ray starts in
advance with a new instance (one per CPU) can then host the federation's actors at once,
whereas a runtime environment makes Ray start fresh workers through its runtime-env agent
and leave the ones it started in advance unused.

Stopping (:func:`leave_ray`). Ray's own exit handler sleeps 0.5 s, disconnects the driver,
then ends the instance's processes one at a time, giving each up to 1 s to exit after
SIGTERM; the autoscaler's monitor takes all of that second, so a run spends about 2 s after
its last line. :func:`leave_ray` kills the helpers that no run needs (the autoscaler's
monitor, the dashboard without its web front end) at once, then lets ``ray.shutdown``
disconnect the driver and end the raylet (which ends its workers and agents first) and the
GCS. It runs at interpreter exit, before Ray's handler (which then has nothing left to do),
also for an instance the user started with ``ray.init`` before the first federation, or
when a caller that owns the process calls it (``redfl run`` does, after the run).

This module relies on three things Ray does not publish: the local node's processes
(``ray._private.worker._global_node.all_processes``), the cached settings it refreshes when
the token mode changes (``ray._raylet.Config``, ``AuthenticationTokenLoader``), the way Ray's
own token set-up does, and the module whose import tells Ray that the dashboard's extras
are installed. ``tests/test_startup.py`` fails if one of them changes.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import ray

AUTH_MODE = "RAY_AUTH_MODE"
AUTH_TOKEN = "RAY_AUTH_TOKEN"
AUTH_TOKEN_PATH = "RAY_AUTH_TOKEN_PATH"
DASHBOARD_EXTRAS = "ray.dashboard.optional_deps"
"""The module whose import tells Ray that the dashboard's extra packages are installed."""
_ABSENT = object()
IDLE_HELPERS = ("monitor", "dashboard", "ray_client_server")
"""Process kinds of a local Ray node that serve no federation (the autoscaler's monitor,
the dashboard without its web front end, the Ray Client server): killed at once when the
instance stops. The raylet, the GCS and the log monitor end through ``ray.shutdown``."""


@contextlib.contextmanager
def launch_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the Ray processes started inside the block,
    then restore the previous environment.

    A change of the token mode or token is also made visible to Ray's settings cached in
    this process (as Ray's own token set-up does); they keep it after the block, so that
    this process goes on authenticating to the instance it started or joined.
    """
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    if AUTH_MODE in values or AUTH_TOKEN in values or AUTH_TOKEN_PATH in values:
        _refresh_auth()
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _refresh_auth() -> None:
    """Make Ray's cached settings and token cache read the environment again."""
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def minimal_dashboard() -> Iterator[None]:
    """Inside the block, Ray finds the dashboard's extra packages missing (its dashboard
    head and agent start minimal); outside, nothing changes."""
    previous = sys.modules.get(DASHBOARD_EXTRAS, _ABSENT)
    sys.modules[DASHBOARD_EXTRAS] = None  # type: ignore[assignment]  # import now fails
    try:
        yield
    finally:
        if previous is _ABSENT:
            sys.modules.pop(DASHBOARD_EXTRAS, None)
        else:
            sys.modules[DASHBOARD_EXTRAS] = previous  # type: ignore[assignment]


def embedded_auth() -> dict[str, str]:
    """The token settings of a new embedded instance: a fresh token in token mode, unless
    the user chose a mode (``RAY_AUTH_MODE``) or gave a token of their own."""
    if AUTH_MODE in os.environ:
        return {}
    if AUTH_TOKEN in os.environ or AUTH_TOKEN_PATH in os.environ:
        return {AUTH_MODE: "token"}
    return {AUTH_MODE: "token", AUTH_TOKEN: secrets.token_hex(32)}


def start_embedded(
    worker_path: str, system_config: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    """Start the embedded Ray instance; return its session folder (where Ray keeps its
    logs) and the token it was given (``None`` when the user chose the mode or the token).

    ``worker_path`` becomes the ``PYTHONPATH`` of its workers.
    """
    auth = embedded_auth()
    with launch_environment({"PYTHONPATH": worker_path, **auth}), minimal_dashboard():
        context = ray.init(
            include_dashboard=False,
            logging_level=logging.WARNING,
            _system_config=dict(system_config),
        )
    return session_dir(context), auth.get(AUTH_TOKEN)


def leave_at_exit() -> None:
    """Run :func:`leave_ray` at interpreter exit, before Ray's own exit handler (registered
    when Ray was imported). Unregistering first keeps one registration and puts it last, so
    that it runs first."""
    atexit.unregister(leave_ray)
    atexit.register(leave_ray)


def session_dir(context: object) -> str | None:
    """The session folder of what ``ray.init`` returned (``None`` for a Ray Client
    connection, whose session folder is on the cluster)."""
    info = getattr(context, "address_info", None)
    return None if not isinstance(info, dict) else info.get("session_dir")


def leave_ray() -> None:
    """Leave Ray fast: stop the local instance this process started (no process of it
    is left), or disconnect from a cluster (which keeps running).

    Safe to call when Ray is not initialised, and more than once.
    """
    if not ray.is_initialized():
        return
    node = ray._private.worker._global_node
    if node is not None and node.is_head():
        for kind in IDLE_HELPERS:
            for info in node.all_processes.get(kind, []):
                with contextlib.suppress(OSError):
                    info.process.kill()
    ray.shutdown()
