"""From command to result: the embedded Ray instance starts quietly and leaves no process
behind, the warm head is joined and stopped, a cluster's token is asked for clearly.

Whole processes (``redfl run``, a script, Ctrl-C) run under ``tests/reaper.py``, a child
subreaper that lists every process of that one command still alive when it exits (Ray's
raylet, GCS, workers and agents stay its descendants whoever their parent was). The
process tests import this checkout's redfl (``PYTHONPATH``) and give Ray a home folder of
their own. Timings are figures of ``bench/startup.py``, not asserted here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_cli_process import user_folder as cli_user_folder
from waiting import wait_until

from redfl.runtime import connect, embedded
from redfl.runtime.connect import RayConnection, warm_head_dir, worker_path
from redfl.runtime.jobs import HEAD_FILE, TOKEN_FILE, group_alive, read_head

REPO = Path(__file__).resolve().parents[1]
REAPER = str(REPO / "tests" / "reaper.py")
REDFL = str(Path(sys.executable).parent / "redfl")

SCRIPT = """
import numpy as np
import redfl
from redfl import StarFederation
from myclient import MyClient

outcome = redfl.run(
    {"federation": {"rounds": 2, "runtime": "ray"},
     "client": {"target": "myclient:MyClient", "num_clients": 3}},
    out="script-run",
)
with StarFederation(MyClient, 4, initial_parameters={"w": np.zeros(2)}) as federation:
    result = federation.train(2)
print("final", outcome.status, len(result.history), result.parameters["w"].tolist())
"""


def user_folder(tmp_path: Path, rounds: int, delay: float = 0.0) -> Path:
    """The user's folder of ``test_cli_process`` (client module, config on the ray runtime)
    and a home folder."""
    folder = cli_user_folder(tmp_path, "ray", rounds, delay)
    (folder / "home").mkdir()
    return folder


def environment(folder: Path, **extra: str) -> dict[str, str]:
    """This checkout's redfl, a home folder of the test's own, no warm head, no cluster."""
    drop = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        PYTHONPATH=str(REPO),
        HOME=str(folder / "home"),
        REDFL_HEAD_DIR=str(folder / "no-head"),
        RAY_USAGE_STATS_ENABLED="0",
        OMP_NUM_THREADS="1",
    )
    env.update(extra)
    return env


class Reaped:
    """A command under ``tests/reaper.py``: its pid, output and what it left behind."""

    def __init__(self, folder: Path, command: list[str], env: dict[str, str]) -> None:
        name = os.urandom(4).hex()
        self.report_path = folder / f"reaped-{name}.json"
        self.out_path, self.err_path = folder / f"{name}.out", folder / f"{name}.err"
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, REAPER, str(self.report_path), "--", *command],
                cwd=folder,
                env=env,
                stdout=out,
                stderr=err,
                text=True,
            )
        assert wait_until(lambda: "\n" in self.out_path.read_text(), 60), self.err()
        self.pid = int(json.loads(self.out_path.read_text().splitlines()[0])["pid"])

    def err(self) -> str:
        """What the command wrote on stderr so far."""
        return self.err_path.read_text()

    def finish(self, timeout: float = 240) -> tuple[str, str, dict[str, Any]]:
        """Wait for the command; its stdout (after the pid line), stderr and the reaper's
        report."""
        try:
            self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        assert self.process.returncode == 0, self.err()
        report: dict[str, Any] = json.loads(self.report_path.read_text(encoding="utf-8"))
        out = "".join(self.out_path.read_text().splitlines(keepends=True)[1:])
        return out, self.err(), report


def reaped(
    folder: Path, command: list[str], env: dict[str, str]
) -> tuple[str, str, dict[str, Any]]:
    return Reaped(folder, command, env).finish()


def ray_lines(text: str) -> list[str]:
    """Lines of Ray's own logging (warnings, errors) on a console stream."""
    markers = ("WARNING", "ERROR", "Token authentication", " W ", " E ", "(raylet)")
    return [line for line in text.splitlines() if any(m in line for m in markers)]


# -- whole processes on the embedded instance ----------------------------------------------


def test_redfl_run_leaves_no_process_no_ray_warning_and_no_home_token(tmp_path: Path) -> None:
    folder = user_folder(tmp_path, rounds=2)
    out, err, report = reaped(
        folder, [REDFL, "run", "run.toml", "--out", "out"], environment(folder)
    )
    assert report["code"] == 0, err
    assert report["at_exit"] == {} and report["later"] == {}, report
    assert ray_lines(out + err) == [], err
    assert "final accuracy n/a after 2 rounds, 3 clients" in out
    summary = json.loads((folder / "out" / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["rounds"] == 2
    session = Path(summary["ray_session"])
    assert (session / "logs").is_dir()  # Ray's full logs stay in its session folder
    assert any(p.name.startswith("raylet") for p in (session / "logs").iterdir())
    assert not (folder / "home" / ".ray").exists()  # no token written to the home folder


def test_a_script_with_redfl_run_and_a_federation_context_leaves_no_process(
    tmp_path: Path,
) -> None:
    folder = user_folder(tmp_path, rounds=2)
    (folder / "script.py").write_text(SCRIPT, encoding="utf-8")
    out, err, report = reaped(folder, [sys.executable, "script.py"], environment(folder))
    assert report["code"] == 0, err
    assert out.strip().splitlines()[-1] == "final succeeded 2 [3.0, 3.0]"  # w + 1 + 2
    assert report["at_exit"] == {} and report["later"] == {}, report
    assert ray_lines(out + err) == [], err


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_cancels_or_aborts_and_leaves_no_process(tmp_path: Path, presses: int) -> None:
    folder = user_folder(tmp_path, rounds=500, delay=0.05 if presses == 1 else 3.0)
    command = Reaped(folder, [REDFL, "run", "run.toml", "--out", "out"], environment(folder))
    events = folder / "out" / "events.jsonl"
    assert wait_until(lambda: events.exists() and "round_finished" in events.read_text(), 120)
    os.killpg(command.pid, signal.SIGINT)  # a terminal's Ctrl-C: SIGINT to the process group
    if presses == 2:  # the second press, once the first was seen, during a 3 s round
        assert wait_until(lambda: "cancelling at the end of this round" in command.err(), 30)
        os.killpg(command.pid, signal.SIGINT)
    out, err, report = command.finish()
    assert report["code"] == 130, err
    assert report["at_exit"] == {} and report["later"] == {}, report
    assert "Traceback" not in err
    summary = json.loads((folder / "out" / "summary.json").read_text())
    if presses == 1:
        assert summary["status"] == "cancelled"
        assert f"cancelled after {summary['rounds']} rounds" in out
    else:
        assert summary["status"] == "failed" and "aborted" in summary["error"]
        assert err.strip().splitlines()[-1] == "redfl: error: aborted"


# -- the warm head and a cluster's token -----------------------------------------------------


def head_group(pid: int) -> set[int]:
    """The processes of the warm head's process group (its raylet's workers included)."""
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pid and fields[0] != "Z":
                members.add(int(entry.name))
    return members


def redfl(folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REDFL, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=240
    )


@pytest.fixture
def warm_head(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A warm head started by ``redfl head start`` in the test's folder; stopped after."""
    folder = user_folder(tmp_path, rounds=2)
    env = environment(folder, REDFL_HEAD_DIR=str(folder / "head"))
    started = redfl(folder, env, "head", "start", "--num-cpus", "2")
    assert started.returncode == 0, started.stderr
    try:
        yield folder, env
    finally:
        found = read_head(folder / "head")
        redfl(folder, env, "head", "stop")
        if found is not None and group_alive(found.pid):
            os.killpg(found.pid, signal.SIGKILL)


def test_the_warm_head_is_joined_keeps_running_and_stops(
    warm_head: tuple[Path, dict[str, str]],
) -> None:
    folder, env = warm_head
    head = read_head(folder / "head")
    assert head is not None and head.job_server == ""
    token = folder / "head" / TOKEN_FILE
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert redfl(folder, env, "head", "status").returncode == 0
    before = head_group(head.pid)
    out, err, report = reaped(folder, [REDFL, "run", "run.toml", "--out", "out"], env)
    assert report["code"] == 0, err
    assert f"runs on the warm Ray head at {head.address}" in err
    assert report["at_exit"] == {} and report["later"] == {}, report
    assert ray_lines(out + err) == [], err
    summary = json.loads((folder / "out" / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert summary["ray_session"].startswith(head.temp_dir)
    # the run's workers were processes of the head; none of them outlives the run
    assert wait_until(lambda: head_group(head.pid) <= before, 20), head_group(head.pid) - before
    assert read_head(folder / "head") == head  # the head itself keeps running

    stopped = redfl(folder, env, "head", "stop")
    assert stopped.returncode == 0 and f"pid {head.pid}" in stopped.stdout
    assert not group_alive(head.pid)
    assert not (folder / "head" / HEAD_FILE).exists()
    status = redfl(folder, env, "head", "status")
    assert status.returncode == 1 and "no warm Ray head runs" in status.stdout


def test_a_cluster_wants_its_token_and_says_how_to_give_it(
    warm_head: tuple[Path, dict[str, str]],
) -> None:
    folder, env = warm_head
    head = read_head(folder / "head")
    assert head is not None
    old_token = read_token(folder)
    join = ("run", "run.toml", "--address", head.address, "--connect-timeout", "20")
    cases = {
        "none": ({}, "uses token authentication"),
        "forged": ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "f" * 64}, "refused"),
    }
    for name, (extra, reason) in cases.items():
        done = redfl(folder, {**env, "REDFL_HEAD_DIR": str(folder / "no-head"), **extra}, *join)
        assert done.returncode == 1, (name, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("redfl: error: "), (name, done.stderr)
        assert head.address in lines[0] and reason in lines[0], (name, lines[0])
        assert "RAY_AUTH_TOKEN=<token>" in lines[0] and "ray get-auth-token" in lines[0]
        assert not (folder / "runs").exists()
    # a restarted head has a new token: the old one is revoked
    assert redfl(folder, env, "head", "stop").returncode == 0
    assert redfl(folder, env, "head", "start", "--num-cpus", "2").returncode == 0
    restarted = read_head(folder / "head")
    assert restarted is not None
    assert read_token(folder) != old_token
    revoked = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": old_token}
    join = ("run", "run.toml", "--address", restarted.address, "--connect-timeout", "20")
    done = redfl(folder, {**env, "REDFL_HEAD_DIR": str(folder / "no-head"), **revoked}, *join)
    assert done.returncode == 1 and "refused the authentication token" in done.stderr
    # with its token, the cluster is joined by address
    given = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": read_token(folder)}
    _, err, report = reaped(
        folder,
        [REDFL, *join, "--out", "joined"],
        {**env, "REDFL_HEAD_DIR": str(folder / "no-head"), **given},
    )
    assert report["code"] == 0, err
    assert json.loads((folder / "joined" / "summary.json").read_text())["rounds"] == 2


def read_token(folder: Path) -> str:
    return (folder / "head" / TOKEN_FILE).read_text().strip()


# -- pure parts: no Ray instance ------------------------------------------------------------


def test_the_embedded_instance_gets_a_token_unless_the_user_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    first, second = embedded.embedded_auth(), embedded.embedded_auth()
    assert first["RAY_AUTH_MODE"] == "token" and len(first["RAY_AUTH_TOKEN"]) == 64
    assert first["RAY_AUTH_TOKEN"] != second["RAY_AUTH_TOKEN"]
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/somewhere/token")
    assert embedded.embedded_auth() == {"RAY_AUTH_MODE": "token"}  # the user's token
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert embedded.embedded_auth() == {}  # the user's choice stands


def test_the_launch_environment_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/before")
    monkeypatch.delenv("REDFL_TEST_ONLY", raising=False)
    with embedded.launch_environment({"PYTHONPATH": "/during", "REDFL_TEST_ONLY": "x"}):
        assert os.environ["PYTHONPATH"] == "/during" and os.environ["REDFL_TEST_ONLY"] == "x"
    assert os.environ["PYTHONPATH"] == "/before" and "REDFL_TEST_ONLY" not in os.environ


def test_workers_find_this_package_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/extra", str(connect.PACKAGE_ROOT)]))
    assert worker_path().split(os.pathsep) == [str(connect.PACKAGE_ROOT), str(tmp_path), "/extra"]
    assert worker_path(with_cwd=False).split(os.pathsep) == [str(connect.PACKAGE_ROOT), "/extra"]
    assert (connect.PACKAGE_ROOT / "redfl" / "runtime" / "connect.py").is_file()


def test_the_warm_head_folder_and_the_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDFL_HEAD_DIR", "/tmp/some-head")
    assert warm_head_dir() == Path("/tmp/some-head")
    monkeypatch.delenv("REDFL_HEAD_DIR")
    monkeypatch.setenv("HOME", "/home/someone")
    assert warm_head_dir() == Path("/home/someone/.redfl/head")
    assert RayConnection("embedded", None, "/tmp/ray/s").note() is None
    assert RayConnection("cluster", "10.0.0.1:6379").note() is None
    note = RayConnection("head", "127.0.0.1:4242").note()
    assert note is not None and "127.0.0.1:4242" in note and "redfl head stop" in note


def test_the_token_ray_sends(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert connect._token_sent() is None  # without token mode, Ray sends none
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert connect._token_sent() == "from-home"
    (tmp_path / "file").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "file"))
    assert connect._token_sent() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert connect._token_sent() == "from-env"


class StandInGcs(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Answers the probe like a Ray GCS with token authentication and token ``secret``."""

    def service(self, details: Any) -> Any:
        if details.method != connect.AUTH_PROBE:
            return None

        def answer(request: bytes, context: Any) -> bytes:
            given = dict(context.invocation_metadata()).get("authorization")
            if given != "Bearer secret":
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "InvalidAuthToken")
            return b""

        return grpc.unary_unary_rpc_method_handler(answer)


def test_the_token_probe_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([StandInGcs()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        address = f"127.0.0.1:{port}"
        connect._check_token(address, 5, "secret")  # accepted: no error
        with pytest.raises(ConnectionError, match="uses token authentication") as missing:
            connect._check_token(address, 5, None)
        with pytest.raises(ConnectionError, match="refused the authentication token"):
            connect._check_token(address, 5, "forged")
        assert address in str(missing.value) and "RAY_AUTH_MODE=token" in str(missing.value)
    finally:
        server.stop(None)
    other = grpc.server(futures.ThreadPoolExecutor(max_workers=1))  # a gRPC server, not Ray
    port = other.add_insecure_port("127.0.0.1:0")
    other.start()
    try:
        with pytest.raises(ConnectionError, match="does not answer as a Ray cluster's GCS"):
            connect._check_token(f"127.0.0.1:{port}", 5, None)
    finally:
        other.stop(None)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(ConnectionError, match=r"within 1 s \(is a Ray head running"):
            connect._check_token(address, 1, None)


def test_the_ray_internals_the_fast_exit_relies_on_exist() -> None:
    import ray._private.worker as ray_worker
    from ray._private.node import Node
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    assert hasattr(ray_worker, "_global_node")
    assert callable(Node.is_head) and callable(Node.kill_all_processes)
    assert callable(Config.initialize)
    assert callable(AuthenticationTokenLoader.instance().reset_cache)
    from ray._private import ray_constants

    for kind in embedded.IDLE_HELPERS:
        assert kind in vars(ray_constants).values(), kind


def test_the_reaper_sees_a_process_left_behind(tmp_path: Path) -> None:
    leave = "import subprocess; subprocess.Popen(['sleep', '30'], start_new_session=True)"
    _, _, report = reaped(tmp_path, [sys.executable, "-c", leave], dict(os.environ))
    assert report["code"] == 0
    assert list(report["later"].values()) == ["sleep 30"]  # orphaned, still listed


def test_a_recorded_head_whose_pid_now_runs_something_else_is_not_a_head(tmp_path: Path) -> None:
    record = {"pid": os.getpid(), "address": "127.0.0.1:1", "job_server": "", "temp_dir": "/t"}
    (tmp_path / HEAD_FILE).write_text(json.dumps(record))
    assert read_head(tmp_path) is None  # alive, but pytest, not `ray start --head`


def test_which_addresses_are_asked_for_a_token() -> None:
    assert connect._gcs_target("10.0.0.1:6379") == ("10.0.0.1", 6379)
    assert connect._gcs_target("[::1]:6379") == ("::1", 6379)
    assert connect._gcs_target("auto") is None  # Ray finds the cluster and its token itself
    assert connect._gcs_target("ray://10.0.0.1:10001") is None  # Ray Client: Ray's own check


def test_inside_the_start_ray_finds_the_dashboard_extras_missing_and_after_as_before() -> None:
    from ray._private.utils import get_dashboard_dependency_error

    before = get_dashboard_dependency_error() is None  # installed here (the platform extra)
    with embedded.minimal_dashboard():
        assert get_dashboard_dependency_error() is not None  # Ray starts its minimal agent
    assert (get_dashboard_dependency_error() is None) == before
    assert sys.modules.get(embedded.DASHBOARD_EXTRAS, "absent") is not None


def test_head_commands_take_the_warm_heads_folder_or_a_platform_data_folder(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from redfl.cli import app

    runner = CliRunner()
    both = runner.invoke(app, ["head", "stop", "--dir", str(tmp_path), "--data", str(tmp_path)])
    assert both.exit_code == 2
    assert (
        both.stderr.strip()
        == "redfl: error: --data: give --dir (the warm head) or --data, not both"
    )
    data = tmp_path / "redfl-data"
    status = runner.invoke(app, ["head", "status", "--data", str(data)])
    assert (status.exit_code, status.stdout) == (1, f"no Ray head runs for {data}\n")
    stopped = runner.invoke(app, ["head", "stop", "--data", str(data)])
    assert (stopped.exit_code, stopped.stdout) == (0, f"no Ray head runs for {data}\n")
    warm = runner.invoke(app, ["head", "status", "--dir", str(tmp_path / "head")])
    assert (warm.exit_code, warm.stdout) == (1, "no warm Ray head runs\n")
