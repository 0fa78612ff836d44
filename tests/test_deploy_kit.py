"""The deployment kit on this machine: ``redfl tree --hosts`` for two hosts (both 127.0.0.1,
distinct ports and Ray temp folders), each host's start script run as a process (a Ray head
or node with token authentication, the edge server, relays, LCPs, the proxy), the edge chain
healthy end to end, ``run_hierarchy.sh`` completing on the cluster, and the pinned subtree
folded on the host that offers its resource. Only the processes the test started (and their
children) are ended, by pid."""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from typer.testing import CliRunner
from waiting import wait_until

from redfl.cli import app
from redfl.edge.provision import Member
from redfl.trust.operator import OPERATOR_HEADER, operator_token

TESTS = Path(__file__).resolve().parent
START_S = 120.0


def free_block(count: int) -> int:
    """The first of ``count`` consecutive ports of 127.0.0.1 that nobody listens on now."""
    for _ in range(200):
        base = random.randrange(20_000, 60_000 - count)
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} consecutive free ports")


class Kit:
    """The provisioned folder and the host scripts running from it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ray_port = free_block(1)
        self.rp = free_block(10)  # the proxy, then the tree's 9 sites
        hosts = root / "HOSTS.toml"
        hosts.write_text(
            f"""\
ray_port = {self.ray_port}

[hosts.alpha]
address = "127.0.0.1"
head = true
cpus = 1
ray_ports = {free_block(200)}
object_store_mb = 100

[hosts.beta]
address = "127.0.0.1"
sites = ["agg-2"]
cpus = 1
ray_ports = {free_block(200)}
object_store_mb = 100
""",
            encoding="utf-8",
        )
        made = CliRunner().invoke(
            app,
            [
                "tree",
                "-d",
                "1",
                "-w",
                "2",
                "-c",
                "2",
                "-r",
                str(root),
                "-p",
                "kit",
                "--rp",
                str(self.rp),
                "--hosts",
                str(hosts),
            ],
        )
        assert made.exit_code == 0, made.output
        self.folder = root / "kit"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.family: set[int] = set()
        self.temp = {h: Path(tempfile.mkdtemp(prefix="rk", dir="/tmp")) for h in ("alpha", "beta")}

    def env(self, host: str) -> dict[str, str]:
        env = dict(os.environ, RAY_TMPDIR=str(self.temp[host]), OMP_NUM_THREADS="1")
        env.pop("RAY_ADDRESS", None)
        paths = [str(TESTS.parent), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        return env

    def start(self, host: str) -> None:
        script = self.folder / "scripts" / f"start_{host}.sh"
        log = open(self.root / f"{host}.log", "wb")  # noqa: SIM115 (kept until the end)
        self.processes[host] = subprocess.Popen(
            [str(script)], env=self.env(host), stdout=log, stderr=subprocess.STDOUT
        )

    def remember(self) -> None:
        """Note every descendant of the scripts (to end any that outlive them)."""
        for process in self.processes.values():
            try:
                self.family.update(c.pid for c in psutil.Process(process.pid).children(True))
            except psutil.NoSuchProcess:
                continue

    def stop(self) -> None:
        self.remember()
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        survivors = [p for p in self.family if psutil.pid_exists(p)]
        for pid in survivors:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                continue
        for folder in self.temp.values():
            shutil.rmtree(folder, ignore_errors=True)

    def alive(self) -> None:
        for host, process in self.processes.items():
            if process.poll() is not None:
                raise AssertionError(
                    f"start_{host}.sh exited with {process.returncode}:\n{self.logs()}"
                )

    def logs(self) -> str:
        """The tail of every log of the scripts and their processes."""
        files = [*self.root.glob("*.log"), *(self.folder / "logs").glob("*.log")]
        return "\n".join(f"== {f.name}\n{f.read_text(errors='replace')[-1500:]}" for f in files)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    running = Kit(tmp_path_factory.mktemp("deploy"))
    try:
        yield running
    finally:
        running.stop()


def healthy(url: str, operator: Member) -> bool:
    try:
        reply = httpx.get(f"{url}/health", verify=operator.client_tls(), timeout=2.0)
        return reply.status_code == 200 and bool(reply.json().get("synced", True))
    except httpx.HTTPError:
        return False


def test_the_host_scripts_start_a_cluster_and_an_edge_tree_that_hold(kit: Kit) -> None:
    operator = Member.load(kit.folder, "operator")
    placed = json.loads((kit.folder / "hosts.json").read_text())
    tree = json.loads((kit.folder / "tree.json").read_text())
    port = {site["name"]: site["port"] for site in tree["sites"]}
    kit.start("alpha")
    assert wait_until(lambda: healthy(f"https://127.0.0.1:{port['server']}", operator), START_S), (
        kit.logs()
    )
    kit.alive()
    kit.start("beta")  # its Ray node joins the head; its relay and LCPs reach the server
    for lcp in ("lcp-1-1", "lcp-1-2", "lcp-2-1", "lcp-2-2"):
        up = functools.partial(healthy, f"https://127.0.0.1:{port[lcp]}", operator)
        assert wait_until(up, START_S), kit.logs()
    kit.alive()
    kit.remember()
    assert placed["hosts"]["beta"]["sites"] == ["relay-2", "agg-2", "lcp-2-1", "lcp-2-2"]
    # the proxy (TLS, the tree's certificate) sees every LCP up, as the operator
    proxy = f"https://127.0.0.1:{kit.rp}"
    tls = ssl.create_default_context(cafile=kit.folder / "trust" / "ca.pem")  # a device's

    def all_up() -> bool:
        try:
            headers = {OPERATOR_HEADER: operator_token(operator.bundle)}
            stats = httpx.get(f"{proxy}/stats", headers=headers, verify=tls, timeout=2.0).json()
        except httpx.HTTPError:
            return False
        return bool(len(stats["up"]) == 4 and all(stats["up"].values()))

    assert wait_until(all_up, START_S)
    # a device with a token issued in advance reaches the job through the whole chain
    tokens = kit.folder / "tokens.json"
    issued = CliRunner().invoke(
        app,
        [
            "edge",
            "devices",
            "issue",
            "--tree",
            str(kit.folder),
            "--count",
            "1",
            "--out",
            str(tokens),
        ],
    )
    assert issued.exit_code == 0, issued.output
    token = json.loads(tokens.read_text())["device-00000"]
    reply = httpx.post(
        f"{proxy}/job",
        json={"job_name": "edge-job"},
        headers={"authorization": f"Bearer {token}"},
        verify=tls,
    )
    assert reply.json()["status"] == "OK", reply.text
    # the hierarchical run of the kit's config completes on the cluster ...
    out = kit.root / "run"
    ran = subprocess.run(
        [str(kit.folder / "scripts" / "run_hierarchy.sh"), "--rounds", "2", "--out", str(out)],
        env=kit.env("alpha"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-3000:] + kit.logs()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["rounds"] == 2
    # ... with agg-2's subtree folded on beta, the host offering its resource
    driver = subprocess.run(
        [
            sys.executable,
            str(TESTS / "kit_driver.py"),
            str(kit.folder),
            f"127.0.0.1:{kit.ray_port}",
        ],
        env={
            **kit.env("alpha"),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(kit.folder / "ray_token"),
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert driver.returncode == 0, driver.stderr[-3000:]
    report = json.loads(driver.stdout.strip().splitlines()[-1])
    assert report["pinned"] == ["agg-2"] and report["coverage"] == 1.0
    pinned_node = report["nodes"][report["layout"]["agg-2"]]
    assert report["resources"][pinned_node] == ["redfl-site-agg-2"]
    kit.alive()
