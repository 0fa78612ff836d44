"""What the cluster that executes runs is made of: each machine's total resources.

A submitted config is checked against it (``{GPU = 1}`` on a cluster without GPUs is
refused at once, naming ``resources.worker``), so :class:`ClusterView` answers without
joining Ray: it reads the job server's state API over HTTP (the cluster of ``--ray-address``,
or the embedded head of the data folder) and keeps the answer for ``CACHE_SECONDS``. While
the embedded head is not running yet it predicts the head's machine: this machine's CPUs
(or ``ray_num_cpus``) and its NVIDIA GPUs, as Ray counts them. A cluster that does not
answer is not checked (``None``): the run's own start-up check still refuses it then.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from redfl.platform.settings import Settings
from redfl.runtime.jobs import JobError, auth_token, cluster_nodes, job_server_url, read_head

CACHE_SECONDS = 30.0
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def this_machine(num_cpus: int | None) -> dict[str, float]:
    """The resources an embedded head on this machine will have."""
    gpus = len(list(NVIDIA_GPUS.iterdir())) if NVIDIA_GPUS.is_dir() else 0
    cpus = num_cpus if num_cpus is not None else os.cpu_count() or 1
    return {"CPU": float(cpus), "GPU": float(gpus)}


class ClusterView:
    """The machines of the cluster the settings name, read at most every
    ``CACHE_SECONDS``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._read_at = -CACHE_SECONDS
        self._machines: list[dict[str, float]] | None = None

    def machines(self) -> list[dict[str, float]] | None:
        """Each machine's total resources; ``None`` when the cluster does not answer."""
        with self._lock:
            if time.monotonic() - self._read_at < CACHE_SECONDS:
                return self._machines
        found = self._read()
        with self._lock:
            self._machines, self._read_at = found, time.monotonic()
        return found

    def _read(self) -> list[dict[str, float]] | None:
        address = self.settings.ray_address
        predicted = [this_machine(self.settings.ray_num_cpus)]
        if address in (None, "local"):
            data = self.settings.data_dir
            head = read_head(data)
            if head is None:
                return predicted
            url, token = head.job_server, auth_token(data)
        else:
            assert address is not None
            url, token = job_server_url(address), None
        try:
            nodes = cluster_nodes(url, token)
        except JobError:
            return predicted if address in (None, "local") else None
        return nodes or (predicted if address in (None, "local") else None)
