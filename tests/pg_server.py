"""A real PostgreSQL server for the store tests, and one fresh database per test.

Debian's ``postgresql`` package puts its binaries in ``/usr/lib/postgresql/<version>/bin``.
PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user
(``runuser``) on a temporary folder that user owns, on a free port of 127.0.0.1 only.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from waiting import free_port, wait_until

MISSING = (
    "PostgreSQL binaries not found in /usr/lib/postgresql/*/bin: install the Debian package "
    "'postgresql' (scripts/system-packages.sh does)"
)


@dataclass(frozen=True)
class PostgresServer:
    """A running server: its port and superuser; ``url(db)`` names one of its databases."""

    port: int
    pid: int

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` on this server (psycopg 3)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if not found:
        pytest.fail(MISSING, pytrace=False)
    return Path(found[-1]).parent


def _version(path: str) -> float:
    try:
        return float(Path(path).parent.parent.name)
    except ValueError:
        return 0.0


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server (initdb + pg_ctl as ``postgres``) on a free port of 127.0.0.1 and
    a temporary folder, stopped by its pid at the end."""
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="redfl-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(
        [
            *_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres"]),
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [
            *_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log")]),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    pid = int((data / "postmaster.pid").read_text().split()[0])
    try:
        yield PostgresServer(port=port, pid=pid)
    finally:
        os.kill(pid, signal.SIGINT)  # fast shutdown
        if not wait_until(lambda: not _alive(pid), 30):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session", name="postgres_server")
def postgres_server_fixture() -> Iterator[PostgresServer]:
    """:func:`running_postgres` for the test session."""
    with running_postgres() as server:
        yield server


def create_database(server: PostgresServer) -> str:
    """A new empty database on ``server``; its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(
        host="127.0.0.1", port=server.port, user="postgres", dbname="postgres", autocommit=True
    ) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return server.url(name)
