"""Test helpers for the sites runtime: a federation home with credentials (good, forged,
expired, revoked), site processes (``redfl site run``), and a raw site that speaks the
protocol by hand (to misbehave on purpose)."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from waiting import free_port, wait_until

from redfl.examples.digits_files import write_site_data
from redfl.examples.echo import EchoClient
from redfl.run.api import RunOutcome
from redfl.runtime.plan import make_plan
from redfl.runtime.resources import ResourcesConfig
from redfl.runtime.sites.admin import issue_site
from redfl.runtime.sites.backend import SitesBackend
from redfl.runtime.sites.config import SitesConfig
from redfl.schemas.base import virtual_nodes
from redfl.trust import Bundle, TrustHome
from redfl.trust.files import PRIVATE, write_atomic

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


NAMES = ["hospital-a", "hospital-b", "clinic-c"]
DIGITS = "redfl.examples.digits_files:FileDigitsClient"


@dataclass
class Deployment:
    """A federation home, the sites' folders (credentials, data) and a port."""

    folder: Path
    home: TrustHome
    port: int
    names: Sequence[str] = tuple(NAMES)

    def config(self, client: str, options: dict[str, Any], **federation: Any) -> dict[str, Any]:
        return {
            "federation": {"name": "sites", "runtime": "sites", "rounds": 3, **federation},
            "client": {"target": client, "num_clients": len(self.names), "options": options},
            "strategy": {"name": "fedavg", "fraction_evaluate": 1.0},
            "sites": {
                "home": str(self.home.path),
                "listen": f"127.0.0.1:{self.port}",
                "expected": list(self.names),
                "join_timeout": 120,
            },
        }

    def options_file(self, name: str, **options: Any) -> Path:
        path = self.folder / name / "options.toml"
        path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in options.items()))
        return path


def deploy(folder: Path, names: Sequence[str] = tuple(NAMES)) -> Deployment:
    """A federation home, and a credential and a digits data file for each site of
    ``names``."""
    home = TrustHome.init(folder / "fed-home")
    port = free_port()
    for name in names:
        credential(home, name, port, folder / name / "credentials.json")
    write_site_data(folder, list(names))
    return Deployment(folder, home, port, tuple(names))


def parameters(outcome: RunOutcome) -> dict[str, bytes]:
    """A successful run's model, as bytes by name."""
    assert outcome.status == "succeeded", outcome.error
    assert outcome.result is not None and outcome.result.parameters is not None
    return {k: v.tobytes() for k, v in outcome.result.parameters.items()}


def events(run_folder: Path) -> list[dict[str, Any]]:
    """A run folder's events."""
    lines = (run_folder / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def url(port: int) -> str:
    """The server's URL on 127.0.0.1."""
    return f"https://127.0.0.1:{port}"


def credential(home: TrustHome, name: str, port: int, out: Path, **issue: Any) -> Path:
    """Issue site ``name``'s bundle (``issue``: ``days``, ``valid_from``) into ``out``."""
    if issue:
        bundle = home.issue(name, "site", **issue).with_fields(server_url=url(port))
    else:
        bundle = issue_site(home, name, url(port))
    out.parent.mkdir(parents=True, exist_ok=True)
    bundle.write(out)
    return out


def expired(home: TrustHome, name: str, port: int, out: Path) -> Path:
    """A credential of the home that expired yesterday."""
    start = datetime.now(UTC) - timedelta(days=2)
    return credential(home, name, port, out, days=1, valid_from=start)


def forged(name: str, port: int) -> Bundle:
    """A credential for ``name`` from another CA (a home of its own)."""
    other = TrustHome.init(Path(tempfile.mkdtemp()) / "other-home")
    return other.issue(name, "site").with_fields(server_url=url(port))


def tls_context(home: TrustHome, bundle: Bundle | None) -> ssl.SSLContext:
    """A client context that trusts ``home``'s CA (as anyone may: it is public) and presents
    ``bundle``'s certificate (none if ``None``), whoever signed it."""
    context = ssl.create_default_context(cadata=home.ca_pem)
    if bundle is not None:
        with tempfile.TemporaryDirectory() as folder:
            chain = Path(folder) / "chain.pem"
            write_atomic(chain, (bundle.key_pem + bundle.cert_pem).encode(), PRIVATE)
            context.load_cert_chain(chain)
    return context


@dataclass
class RawSite:
    """A site written by hand: every request and body as the test wants it."""

    port: int
    context: ssl.SSLContext
    session: str = ""

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=url(self.port), verify=self.context, timeout=30.0)

    def join(self) -> httpx.Response:
        with self.client() as http:
            response = http.post("/v1/join", json={"v": 1})
        if response.status_code == 200:
            self.session = response.json()["session"]
        return response

    def poll(self, have: str = "") -> httpx.Response:
        with self.client() as http:
            return http.get("/v1/work", params={"have": have}, headers=self.headers())

    def reply(self, job: str, body: bytes) -> httpx.Response:
        with self.client() as http:
            return http.post("/v1/reply", content=body, headers=self.headers(job))

    def headers(self, job: str = "") -> dict[str, str]:
        return {"x-redfl-session": self.session, "x-redfl-job": job}


class SiteProcess:
    """``redfl site run`` in a process of its own, its output in ``workdir/site.log``."""

    def __init__(
        self,
        credentials: Path,
        client: str,
        workdir: Path,
        options: Path | None = None,
        stay: bool = False,
    ) -> None:
        self.workdir = workdir
        self.log = workdir / "site.log"
        command = [sys.executable, "-m", "redfl.cli", "site", "run"]
        command += ["--credentials", str(credentials), "--client", client]
        command += ["--workdir", str(workdir)]
        if options is not None:
            command += ["--options", str(options)]
        if stay:
            command.append("--stay")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]),
            "PYTHONUNBUFFERED": "1",
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, seconds: float = 60.0) -> bool:
        return wait_until(lambda: text in self.output(), seconds)

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def stop(self) -> None:
        """End the process (continue it first, if it was stopped)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait(30)


def start_sites(
    names: Sequence[str], folder: Path, client: str, stay: bool = False
) -> list[SiteProcess]:
    """One site process per name, each in ``folder/<name>`` with its credentials there (and
    its ``options.toml``, if there is one)."""
    sites = []
    for name in names:
        options: Path | None = folder / name / "options.toml"
        if options is not None and not options.is_file():
            options = None
        credentials = folder / name / "credentials.json"
        sites.append(SiteProcess(credentials, client, folder / name, options, stay))
    return sites


def serve(home: TrustHome, names: Sequence[str]) -> tuple[SitesBackend, int]:
    """A started sites backend for echo clients named ``names``, on a free port."""
    port = free_port()
    table = SitesConfig(home=str(home.path), listen=f"127.0.0.1:{port}", expected=list(names))
    backend = SitesBackend(table)
    plan = make_plan(
        "fed",
        0,
        virtual_nodes(EchoClient, names),
        None,
        backend.plan_resources(ResourcesConfig()),
        backend.available_resources(),
        backend.machine_resources(),
    )
    backend.start(plan)
    return backend, port
