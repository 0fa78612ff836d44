"""A real ``redfl serve`` for end-to-end tests: users made with ``redfl users create``, the
server started and restarted on one data folder (its own Ray head, stopped at the end), and
calls as its users."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from waiting import free_port, wait_until

from redfl.runtime.jobs import read_head, stop_head

REDFL = str(Path(sys.executable).parent / "redfl")
PASSWORDS = {"ada": "admin password", "rita": "researcher password", "vic": "viewer password"}
ROLES = {"ada": "admin", "rita": "researcher", "vic": "viewer"}


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/api/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Server:
    """``redfl serve`` on ``data`` (its log in ``folder/serve.log``) with ``settings`` in its
    ``platform.toml``."""

    data: Path
    folder: Path
    settings: dict[str, Any] = field(default_factory=dict)
    url: str = ""
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        port = free_port()
        lines = [f"{k} = {v!r}".replace("'", '"') for k, v in self.settings.items()]
        (self.data / "platform.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        with (self.folder / "serve.log").open("ab") as log:
            process = subprocess.Popen(
                [REDFL, "serve", "--port", str(port), "--data", str(self.data)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.process, self.url = process, f"http://127.0.0.1:{port}"
        assert wait_until(lambda: process.poll() is not None or _healthy(self.url), 90.0)
        assert process.poll() is None, (self.folder / "serve.log").read_text()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)

    def login(self, name: str) -> dict[str, str]:
        reply = httpx.post(
            self.url + "/api/auth/login",
            json={"username": name, "password": PASSWORDS[name]},
            timeout=30,
        )
        return {"Authorization": f"Bearer {reply.json()['access_token']}"}

    def get(self, path: str, who: str) -> Any:
        return httpx.get(self.url + path, headers=self.login(who), timeout=60).json()

    def post(self, path: str, who: str, body: Any = None) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers=self.login(who), timeout=60)


def make_server(tmp_path: Path, settings: dict[str, Any]) -> Iterator[Server]:
    """A :class:`Server` (not started) with the users of :data:`ROLES`; its head is stopped
    at the end."""
    data = tmp_path / "data"
    for name, role in ROLES.items():
        created = subprocess.run(
            [REDFL, "users", "create", name, "--role", role, "--data", str(data)],
            input=(PASSWORDS[name] + "\n").encode(),
            capture_output=True,
            check=False,
        )
        assert created.returncode == 0, created.stderr.decode()
    made = Server(data, tmp_path, settings)
    try:
        yield made
    finally:
        made.stop()
        head = read_head(data)
        if head is not None:
            stop_head(head.pid, timeout=5)
