"""Sites as real processes (``redfl site run``), each in its own folder with its own data
file, talking mutual TLS to the server on 127.0.0.1: the same config gives the same bits at
sites as simulated on Ray and in-process; a site killed mid-round fails and rejoins; a site
that stops answering times out; a killed server resumes and the sites come back by
themselves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file
from sites_rig import (
    DIGITS,
    NAMES,
    ROOT,
    TESTS,
    Deployment,
    SiteProcess,
    deploy,
    events,
    parameters,
    start_sites,
)
from waiting import wait_until

from redfl.examples.digits_files import write_site_data
from redfl.run.api import RunOutcome, run
from redfl.run.site_states import site_states


# -- the same bits at sites, on Ray and in-process ----------------------------------------
@pytest.fixture(scope="module")
def staying(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Three digits sites that stay for one run after another."""
    deployment = deploy(tmp_path_factory.mktemp("sites"))
    for name in NAMES:  # the sites' own options: their file, the run's model settings
        deployment.options_file(name, data="data.npz", epochs=2)
    sites = start_sites(NAMES, deployment.folder, DIGITS, stay=True)
    yield deployment
    for site in sites:
        site.stop()


@pytest.mark.parametrize(
    "strategy", [{"name": "fedavg"}, {"name": "fedadam", "eta": 0.05, "eta_l": 0.1}]
)
def test_sites_give_the_bits_of_the_same_config_on_ray_and_in_process(
    staying: Deployment, strategy: dict[str, Any], ray_session: Any
) -> None:
    data = str(staying.folder / "{node_id}" / "data.npz")
    config = staying.config(DIGITS, {"data": data, "epochs": 2})
    config["strategy"].update(strategy)
    out = staying.folder / f"run-{strategy['name']}"
    at_sites = run(config, out=out)
    bits = parameters(at_sites)
    assert bits == parameters(
        run(config, out=out.with_suffix(".local"), overrides={"runtime": "local"})
    )
    assert bits == parameters(
        run(config, out=out.with_suffix(".ray"), overrides={"runtime": "ray"})
    )
    history = at_sites.summary
    assert history["rounds"] == 3 and history["accuracy"] is not None and history["failures"] == 0
    kinds = [e["type"] for e in events(out)]
    assert kinds.count("site_joined") == 3 and kinds.count("site_round") == 9
    states = site_states(out)
    assert [(st.name, st.connected, st.rounds, st.failures, st.left) for st in states] == [
        (name, False, 3, 0, "the run ended") for name in NAMES
    ]
    assert all(st.address.startswith("127.0.0.1:") for st in states)
    log = (staying.folder / "clinic-c" / "site.log").read_text()
    assert f"site clinic-c: joined run {at_sites.summary['federation_id']}" in log
    assert "site clinic-c: round 3: fit 479 examples, loss" in log
    assert "site clinic-c: round 3: evaluate loss" in log


# -- faults ------------------------------------------------------------------------------
class Background:
    """A run of the server in a thread, cancelled by the test when it has seen enough."""

    def __init__(self, config: dict[str, Any], out: Path) -> None:
        self.out = out
        self.cancel = threading.Event()
        self.outcome: list[RunOutcome] = []
        self.thread = threading.Thread(target=self._run, args=(config,), daemon=True)
        self.thread.start()

    def _run(self, config: dict[str, Any]) -> None:
        self.outcome.append(run(config, out=self.out, cancel=self.cancel))

    def events(self) -> list[dict[str, Any]]:
        path = self.out / "events.jsonl"
        return events(self.out) if path.is_file() else []

    def finish(self) -> RunOutcome:
        self.cancel.set()
        self.thread.join(120)
        assert self.outcome, "the run did not end"
        return self.outcome[0]


def site_rounds(seen: list[dict[str, Any]], site: str, after: int = 0) -> list[int]:
    """The rounds ``site`` took part in, from events with ``seq`` > ``after``."""
    return [
        e["round"]
        for e in seen
        if e["type"] == "site_round" and e["site"] == site and e["seq"] > after
    ]


def joined(seen: list[dict[str, Any]], site: str) -> list[int]:
    """The ``seq`` of each ``site_joined`` event of ``site``."""
    return [e["seq"] for e in seen if e["type"] == "site_joined" and e["site"] == site]


@contextmanager
def echo_run(folder: Path, **federation: Any) -> Iterator[tuple[list[SiteProcess], Background]]:
    """Three echo sites pausing 0.3 s per fit and a long run of them (2 must succeed), which
    the test cancels by leaving the block (then the sites are stopped)."""
    deployment = deploy(folder)
    for name in NAMES:
        deployment.options_file(name, size=16, pause=0.3)
    sites = start_sites(NAMES, folder, "site_clients:PausingEcho")
    config = deployment.config("site_clients:PausingEcho", {"size": 16}, rounds=200, **federation)
    config["strategy"].update(fraction_evaluate=0.0, min_fit_clients=2)
    server = Background(config, folder / "run")
    try:
        yield sites, server
        assert server.finish().status == "cancelled"
    finally:
        server.cancel.set()
        for site in sites:
            site.stop()


def test_a_site_killed_mid_round_fails_the_round_goes_on_and_it_rejoins(tmp_path: Path) -> None:
    victim = tmp_path / "hospital-b"
    with echo_run(tmp_path) as (sites, server):
        assert wait_until(lambda: (victim / "started-2").exists(), 120)
        sites[1].signal(signal.SIGKILL)  # in the middle of its round-2 fit
        sites[1].process.wait(30)
        sites[1] = SiteProcess(
            victim / "credentials.json", "site_clients:PausingEcho", victim, victim / "options.toml"
        )

        def rejoined() -> bool:
            seen = server.events()
            joins = joined(seen, "hospital-b")
            return len(joins) == 2 and len(site_rounds(seen, "hospital-b", joins[1])) >= 2

        assert wait_until(rejoined, 120), server.events()[-5:]
    seen = events(tmp_path / "run")
    failures = [e["failure"] for e in seen if e["type"] == "failure"]
    gone = {  # the lease ran out, or the restarted site came back first and replaced it
        "site 'hospital-b' left: its connection closed",
        "site 'hospital-b' left: replaced by a new connection of the same site",
    }
    assert (failures[0]["node_id"], failures[0]["round"], failures[0]["phase"]) == (
        "hospital-b",
        2,
        "fit",
    )
    assert failures[0]["reason"] in gone
    assert {f["node_id"] for f in failures} == {"hospital-b"}  # the others never failed
    rejoin = joined(seen, "hospital-b")[1]
    started_after = [e["round"] for e in seen if e["type"] == "round_started" and e["seq"] > rejoin]
    finished = {e["record"]["round"] for e in seen if e["type"] == "round_finished"}
    took_part = set(site_rounds(seen, "hospital-b", rejoin))
    assert [r for r in started_after if r in finished and r not in took_part] == []
    assert all(f["round"] < min(took_part) for f in failures)
    victim_state = site_states(tmp_path / "run")[1]
    assert victim_state.failures == len(failures) and victim_state.rounds == len(
        site_rounds(seen, "hospital-b")
    )
    records = [e["record"] for e in seen if e["type"] == "round_finished"]
    assert all(r["succeeded"] >= 2 for r in records) and records[1]["failed"] == 1


def test_a_site_that_stops_answering_times_out_within_client_timeout(tmp_path: Path) -> None:
    frozen = tmp_path / "clinic-c"
    with echo_run(tmp_path, client_timeout=1.0) as (sites, server):
        assert wait_until(lambda: (frozen / "started-3").exists(), 120)
        sites[2].signal(signal.SIGSTOP)  # in the middle of its round-3 fit
        assert wait_until(lambda: any(e["type"] == "failure" for e in server.events()), 60)
        sites[2].signal(signal.SIGCONT)
        assert wait_until(lambda: len(site_rounds(server.events(), "clinic-c")) >= 4, 120)
        late = sites[2]
    seen = events(tmp_path / "run")
    failure = next(e for e in seen if e["type"] == "failure")
    assert failure["failure"] == {
        "node_id": "clinic-c",
        "round": 3,
        "phase": "fit",
        "reason": "timeout after 1 s",
    }
    began = next(e["time"] for e in seen if e["type"] == "round_started" and e["round"] == 3)
    assert failure["time"] - began <= 1.0 + 1.0
    assert 3 not in site_rounds(seen, "clinic-c") and max(site_rounds(seen, "clinic-c")) > 3
    assert "the server did not take the reply: job" in late.output()


def test_a_killed_server_resumes_and_the_sites_come_back_by_themselves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = deploy(tmp_path)
    client = "site_clients:PausingDigits"
    config = deployment.config(client, {"data": str(tmp_path / "{node_id}" / "data.npz")})
    config["federation"].update(rounds=6, checkpoint_every=1)
    config["strategy"] = {"name": "fedadam", "eta": 0.05, "fraction_evaluate": 0.0}
    (tmp_path / "sites.toml").write_text(toml(config))
    for name in NAMES:
        deployment.options_file(name, data="data.npz", pause=0.3)
    sites = [
        SiteProcess(
            tmp_path / n / "credentials.json", client, tmp_path / n, tmp_path / n / "options.toml"
        )
        for n in NAMES
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    redfl = [sys.executable, "-m", "redfl.cli", "run"]
    log = (tmp_path / "server.log").open("wb")
    first = subprocess.Popen(
        [*redfl, "sites.toml", "--out", "run"], cwd=tmp_path, env=env, stdout=log, stderr=log
    )
    try:
        assert wait_until(
            lambda: (tmp_path / "run/checkpoints/round-000002/state.json").exists(), 180
        )
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        resumed = subprocess.run(
            [*redfl, "--resume", "run"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert resumed.returncode == 0, resumed.stderr
        for site in sites:
            assert site.process.wait(60) == 0  # the run ended: each site ended too
    finally:
        first.kill()
        for site in sites:
            site.stop()
    monkeypatch.chdir(tmp_path)
    undisturbed = run(config, out=tmp_path / "local", overrides={"runtime": "local"})
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert {k: v.tobytes() for k, v in saved.items()} == parameters(undisturbed)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["rounds"] == 6
    for site in sites:
        assert site.output().count(": joined run ") == 2  # the first server's and the resumed one's
        assert "cannot be reached" in site.output()


def toml(config: dict[str, Any]) -> str:
    """A config dict as TOML (tables of scalars, lists and inline tables)."""
    lines = []
    for table, values in config.items():
        lines.append(f"[{table}]")
        for key, value in values.items():
            if isinstance(value, dict):
                inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def test_the_digits_files_split_the_training_data_among_the_sites(tmp_path: Path) -> None:
    written = write_site_data(tmp_path, ["x", "y"])
    sizes = [len(np.load(path)["y"]) for path in written]
    assert written == [tmp_path / "x" / "data.npz", tmp_path / "y" / "data.npz"]
    assert sum(sizes) == 1438 and abs(sizes[0] - sizes[1]) <= 1
