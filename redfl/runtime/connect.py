"""Joining Ray: the embedded instance or a cluster, within a bounded time.

Workers import user code and redfl itself. Ray adds the driver's current folder to every
worker's ``sys.path``, so a folder there named ``redfl`` (the clone's parent, say) would
shadow an editable install of the package on the workers; :func:`worker_env` puts the
folder that holds the imported ``redfl`` package first on the workers' ``PYTHONPATH``,
then the current folder (so a ``client.target`` module beside the config imports there as
on the driver).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import ray

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


def worker_env() -> dict[str, Any]:
    """The runtime environment every worker of this driver gets (see the module doc)."""
    paths = [str(PACKAGE_ROOT), os.getcwd(), os.environ.get("PYTHONPATH", "")]
    unique = list(dict.fromkeys(p for part in paths for p in part.split(os.pathsep) if p))
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(unique)}}


def ensure_ray(address: str | None, timeout: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
    """Start the embedded Ray instance, or join ``address`` (default ``$RAY_ADDRESS``).

    A no-op when Ray is already initialised in this process.

    Raises
    ------
    ConnectionError
        If the cluster at ``address`` cannot be reached within ``timeout`` seconds.
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address in (None, "", "local"):
        ray.init(
            include_dashboard=False,
            logging_level=logging.WARNING,
            runtime_env=worker_env(),
            _system_config=FAULT_DETECTION,
        )
        return
    assert address is not None
    _check_reachable(address, timeout)
    box: dict[str, BaseException] = {}

    def join() -> None:
        try:
            ray.init(address=address, logging_level=logging.WARNING, runtime_env=worker_env())
        except BaseException as error:  # reported to the caller below
            box["error"] = error

    thread = threading.Thread(target=join, name="redfl-ray-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ConnectionError(
            f"could not join the Ray cluster at {address} within {timeout:g} s "
            f"(is a Ray head running there? start one with 'ray start --head')"
        )
    if "error" in box:
        error = box["error"]
        raise ConnectionError(f"could not join the Ray cluster at {address}: {error}") from error


def _check_reachable(address: str, timeout: float) -> None:
    """Fail at once when nothing listens at ``host:port`` (``auto`` is left to Ray)."""
    if address == "auto":
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    if parsed.hostname is None or parsed.port is None:
        return
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=min(timeout, 5)):
            pass
    except OSError as error:
        raise ConnectionError(
            f"cannot reach the Ray cluster at {address}: {error.strerror or error}"
        ) from None


def cluster_machines() -> list[dict[str, float]]:
    """Each live machine's total resources in the cluster this process has joined."""
    nodes = ray.nodes()  # type: ignore[no-untyped-call]
    return [{k: float(v) for k, v in n["Resources"].items()} for n in nodes if n.get("Alive")]
