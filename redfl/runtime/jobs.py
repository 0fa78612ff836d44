"""Ray jobs for the platform: a Ray head that outlives the web server, and its job server.

The embedded default is a local Ray head started as a process of its own (``ray start
--head --block``, in a process group of its own), so killing or restarting ``redfl serve``
leaves it and its jobs running. It stays in the server's session: Linux schedules each
session as one group (autogroups), so the head's lower priority (``nice``) counts against
the server's own processes, while the session as a whole keeps its fair share of the
machine (its Ray services are never starved by other sessions). Its process id and
addresses are kept in ``<data>/ray-head.json``; a restarted server finds the head there and
reuses it. The head keeps its files in a temp folder of its own (never ``/tmp/ray``), so
other Ray programs on the machine never join it, and uses Ray's token authentication with a
token of its own (``<data>/ray-auth-token``, mode 0600), which its jobs inherit and the job
client sends.

``redfl head start`` starts the same kind of head without a job server, kept warm between
runs (``jobs=False``, with redfl's folder on its workers' ``PYTHONPATH``).

Runs are submitted as jobs (:class:`JobClient`, over Ray's ``JobSubmissionClient``): the
entrypoint is a shell command the job server runs; Ray sets ``RAY_ADDRESS`` for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

HEAD_FILE = "ray-head.json"
TOKEN_FILE = "ray-auth-token"
DEFAULT_JOB_SERVER_PORT = 8265
FINAL_JOB_STATUSES = ("SUCCEEDED", "FAILED", "STOPPED")


class JobError(RuntimeError):
    """The Ray head cannot be started or reached, or a job cannot be submitted."""


@dataclass(frozen=True)
class HeadInfo:
    """A local Ray head started by :func:`start_head`: its process, GCS address, job server
    (empty without one), temp folder, and the ``PYTHONPATH`` its workers start with."""

    pid: int
    address: str
    job_server: str
    temp_dir: str
    worker_path: str = ""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def lower_priority(pid: int, nice: int) -> None:
    """Run process ``pid`` and its session at scheduling priority ``nice``.

    Besides the process's own nice value, this sets the nice value of its autogroup (Linux
    schedules each session as one group, fairly against the others, whatever the nice values
    inside it: a session of niced processes would still get a full share of the CPU);
    without autogroups only the nice value counts. For a process alone in its session (a Ray
    job's driver), not for a session that holds Ray's own services.
    """
    try:
        if os.getpriority(os.PRIO_PROCESS, pid) < nice:
            os.setpriority(os.PRIO_PROCESS, pid, nice)
        Path(f"/proc/{pid}/autogroup").write_text(str(nice), encoding="ascii")
    except OSError:  # no such process any more, or no autogroups here
        pass


def _head_temp_dir(data_dir: Path) -> str:
    key = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:10]
    return str(Path(tempfile.gettempdir()) / f"redfl-ray-{key}")  # short: Ray's sockets


def read_head(data_dir: str | Path) -> HeadInfo | None:
    """The head recorded in ``data_dir`` if its process is alive and still ``ray start``
    (not another process that got its pid since), else ``None``."""
    try:
        info = HeadInfo(**json.loads((Path(data_dir) / HEAD_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    return info if pid_alive(info.pid) and _runs_ray_start(info.pid) else None


def _runs_ray_start(pid: int) -> bool:
    """Whether process ``pid`` runs ``ray start --head`` (true where ``/proc`` is missing)."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return not Path("/proc").is_dir()
    return b"start" in words and b"--head" in words


def auth_token(data_dir: str | Path) -> str:
    """The head's authentication token, created (mode 0600) on first use."""
    path = Path(data_dir) / TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    token = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="ascii") as stream:
        stream.write(token)
    return token


def _headers(token: str | None) -> dict[str, str] | None:
    return None if token is None else {"Authorization": f"Bearer {token}"}


def _job_server_up(url: str, token: str | None) -> bool:
    from ray.job_submission import JobSubmissionClient

    try:
        JobSubmissionClient(url, headers=_headers(token)).list_jobs()
    except Exception:  # not up yet: connection refused, 5xx while starting, ...
        return False
    return True


def start_head(
    data_dir: str | Path,
    num_cpus: int | None = None,
    timeout: float = 120.0,
    nice: int = 0,
    *,
    jobs: bool = True,
    worker_path: str | None = None,
) -> HeadInfo:
    """Start a local Ray head as a process of its own, with its job server when ``jobs``.

    Its output goes to ``<data>/ray-head.log``; its pid and addresses to ``<data>/ray-head.json``.
    ``worker_path`` becomes its workers' ``PYTHONPATH``. Ready when the job server answers
    (``jobs``), else when ``ray start`` reports the runtime started. With ``nice`` > 0 the
    head and everything it starts (jobs, workers) run at that lower scheduling priority (a
    job, in a session of its own, lowers its own: :func:`lower_priority`).

    Raises
    ------
    JobError
        If the head is not ready within ``timeout`` seconds (the head is stopped).
    """
    folder = Path(data_dir).resolve()
    home = folder / "ray-head"  # an empty working folder: no package-named folder in it
    home.mkdir(parents=True, exist_ok=True)
    port, dash = free_port(), free_port()
    temp_dir = _head_temp_dir(folder)
    args = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        f"--include-dashboard={'true' if jobs else 'false'}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        # Ray's agents have fixed default ports (52365, ...): another Ray instance on the
        # machine (a driver's own) would hold them and this head's job agent never start.
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
    ]
    if num_cpus is not None:
        args.append(f"--num-cpus={num_cpus}")
    if not jobs:  # Ray's fixed default (10001) would collide with another head's
        args.append(f"--ray-client-server-port={free_port()}")
    if nice > 0:
        args = ["nice", "-n", str(nice), *args]  # nice execs ray: the pid stays the head's
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    env["RAY_AUTH_TOKEN_PATH"] = str(folder / TOKEN_FILE)
    if worker_path is not None:
        env["PYTHONPATH"] = worker_path
    auth_token(folder)
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
        env.pop(name, None)
    log_path = folder / "ray-head.log"
    with log_path.open("ab") as log:
        offset = log.tell()
        process = subprocess.Popen(
            args, cwd=home, stdout=log, stderr=subprocess.STDOUT, env=env, process_group=0
        )
    info = HeadInfo(
        process.pid,
        f"127.0.0.1:{port}",
        f"http://127.0.0.1:{dash}" if jobs else "",
        temp_dir,
        worker_path or "",
    )
    (folder / HEAD_FILE).write_text(json.dumps(asdict(info)), encoding="utf-8")
    deadline = time.monotonic() + timeout
    while not (
        _job_server_up(info.job_server, auth_token(folder))
        if jobs
        else _reported_started(log_path, offset)
    ):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_head(info.pid)
            raise JobError(
                f"the local Ray head did not start within {timeout:g} s (see {log_path})"
            )
        time.sleep(0.5 if jobs else 0.1)
    return info


def _reported_started(log: Path, offset: int) -> bool:
    """Whether ``ray start`` wrote, past ``offset`` of its log, that the runtime started."""
    with log.open("rb") as stream:
        stream.seek(offset)
        return b"Ray runtime started." in stream.read()


def ensure_head(data_dir: str | Path, num_cpus: int | None = None, nice: int = 0) -> HeadInfo:
    """The head recorded in ``data_dir`` if it is alive, else a newly started one.

    Servers sharing the data folder take turns (a lock file, ``ray-head.lock``), so two of
    them never start two heads.
    """
    import fcntl

    folder = Path(data_dir)
    with (folder / "ray-head.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = read_head(folder)
        if found is not None and _job_server_up(found.job_server, auth_token(folder)):
            return found
        if found is not None:
            stop_head(found.pid)
        return start_head(folder, num_cpus, nice=nice)


def stop_head(pid: int, timeout: float = 3.0) -> None:
    """Stop a head started by :func:`start_head` (its process group), by its ``pid``.

    Returns once no process of the group is left: SIGTERM first; what is still alive
    ``timeout`` seconds later gets SIGKILL. (Ray drains for about 30 s on SIGTERM; the
    platform's head and the warm head hold nothing worth the wait: a run's state is in its
    folder and the store.)
    """
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not group_alive(pid):
            return


def group_alive(group: int) -> bool:
    """Whether a process of process group ``group`` is alive (zombies do not count)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def cluster_nodes(
    url: str, token: str | None = None, timeout: float = 2.0
) -> list[dict[str, float]]:
    """The total resources of each live machine of the cluster whose job server (dashboard)
    is at ``url`` (Ray's state API, over HTTP: no Ray client); ``[]`` while none has
    registered yet.

    Raises
    ------
    JobError
        If the job server does not answer, or answers something else.
    """
    request = urllib.request.Request(
        url.rstrip("/") + "/api/v0/nodes?detail=true&limit=10000", headers=_headers(token) or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read().decode("utf-8"))
        nodes = body["data"]["result"]["result"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise JobError(f"cannot read the cluster's machines from {url}: {error}") from None
    return [
        {k: float(v) for k, v in (node.get("resources_total") or {}).items()}
        for node in nodes
        if node.get("state") == "ALIVE"
    ]


def job_server_url(address: str) -> str:
    """The job server of a cluster address: ``http(s)://...`` and ``auto`` (Ray finds the
    cluster started on this machine) as they are, else port 8265 of the GCS address's host."""
    if address == "auto" or address.startswith(("http://", "https://")):
        return address
    host = address.removeprefix("ray://").rpartition(":")[0] or address
    return f"http://{host}:{DEFAULT_JOB_SERVER_PORT}"


class JobClient:
    """Submit, inspect and stop jobs on one job server (blocking calls); ``token``: the
    embedded head's (a cluster's own is found by Ray as usual)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        from ray.job_submission import JobSubmissionClient

        try:
            self._client = JobSubmissionClient(url, headers=_headers(token))
        except Exception as error:  # Ray raises ConnectionError or RuntimeError here
            raise JobError(f"cannot reach the Ray job server at {url}: {error}") from None
        self.url = url

    def submit(
        self, job_id: str, entrypoint: str, env: dict[str, str] | None = None, wait: float = 180.0
    ) -> str:
        """Submit ``entrypoint`` as job ``job_id``; a job of that id already there counts as
        submitted (idempotent). A head that has no job agent yet (just started: Ray answers
        503, "try again later") is asked again for up to ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return str(
                    self._client.submit_job(
                        entrypoint=entrypoint,
                        submission_id=job_id,
                        runtime_env={"env_vars": env or {}},
                    )
                )
            except RuntimeError as error:
                text = str(error).lower()
                busy = any(s in text for s in ("no available agent", "try again later", "503"))
                if busy and time.monotonic() < deadline:
                    time.sleep(1.0)
                    continue
                if self.status(job_id) != "UNKNOWN":
                    return job_id
                raise JobError(f"cannot submit job {job_id}: {error}") from None

    def status(self, job_id: str) -> str:
        """``PENDING``, ``RUNNING``, ``SUCCEEDED``, ``FAILED``, ``STOPPED`` or ``UNKNOWN``
        (no such job); a :class:`JobError` when the job server does not answer."""
        try:
            return str(self._client.get_job_status(job_id).value)
        except RuntimeError:  # Ray's answer for an unknown job
            return "UNKNOWN"
        except Exception as error:  # the HTTP client's connection errors
            raise JobError(f"the Ray job server at {self.url} does not answer: {error}") from None

    def message(self, job_id: str) -> str:
        """Ray's message about the job, and the last lines of its output."""
        try:
            info = self._client.get_job_info(job_id)
            tail = self._client.get_job_logs(job_id).strip().splitlines()[-3:]
        except RuntimeError as error:
            return str(error)
        return " | ".join(x for x in [info.message or "", *tail] if x)

    def stop(self, job_id: str) -> bool:
        """Ask the job server to stop the job; whether it was running."""
        try:
            return bool(self._client.stop_job(job_id))
        except RuntimeError:
            return False
