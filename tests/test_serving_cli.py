"""``redfl model``: bad input exits 2 with one line; ``serve`` on its own embedded Ray
instance serves until ``redfl model stop`` from another process."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from click.testing import Result
from typer.testing import CliRunner
from waiting import free_port, wait_until

from redfl.cli import app
from redfl.data.digits import load_digits_arrays
from redfl.run.api import run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = {
        "federation": {"rounds": 2, "runtime": "local"},
        "client": {"target": "redfl.examples.digits:DigitsClient", "num_clients": 4},
    }
    return run(config, out=tmp_path_factory.mktemp("runs") / "digits-run").folder


def model(*args: str) -> Result:
    return CliRunner().invoke(app, ["model", *args])


def error_line(result: Result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--autoscale", "4:2"], "autoscale: must be MIN:MAX with 0 <= MIN <= MAX"),
        (["--autoscale", "x"], "autoscale: String should match pattern"),
        (
            ["--replicas", "2", "--autoscale", "1:3"],
            "autoscale: give replicas or autoscale, not both",
        ),
        (["--replicas", "0"], "replicas: Input should be greater than or equal to 1 (got 0)"),
        (["--max-batch", "0"], "max_batch: Input should be greater than or equal to 1"),
        (["--name", "no/slash"], "name: String should match pattern"),
        (["--tls-cert", "/etc/hostname"], "tls_key: tls_cert and tls_key go together"),
        (["--address", "no where"], "address: must be 'auto', 'local'"),
    ],
)
def test_bad_serve_options_exit_2_naming_the_option(
    digits_run: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    result = model("serve", str(digits_run), "--home", str(tmp_path), *args)
    assert result.exit_code == 2
    assert error_line(result).startswith("redfl: error: "), result.stderr
    assert message in error_line(result)
    assert not any(tmp_path.iterdir())  # nothing recorded


def test_folders_that_cannot_be_served_exit_2(tmp_path: Path) -> None:
    missing = model("serve", str(tmp_path / "nope"), "--home", str(tmp_path))
    assert missing.exit_code == 2
    assert error_line(missing) == f"redfl: error: run folder: {tmp_path / 'nope'} is not a folder"
    empty = model("serve", str(tmp_path), "--home", str(tmp_path / "home"))
    assert empty.exit_code == 2 and "has no model.safetensors" in error_line(empty)
    echo = {
        "federation": {"rounds": 1, "runtime": "local"},
        "client": {"target": "redfl.examples.echo:EchoClient", "num_clients": 2},
    }
    folder = run(echo, out=tmp_path / "echo").folder
    result = model("serve", str(folder), "--home", str(tmp_path / "home"))
    assert result.exit_code == 2 and "EchoClient offers no predict" in error_line(result)


def test_list_stop_token_and_revoke_of_nothing(tmp_path: Path) -> None:
    home = ["--home", str(tmp_path)]
    listed = model("list", *home)
    assert (listed.exit_code, listed.stdout) == (0, "no served models\n")
    for args in (["stop", "d1"], ["token", "d1"], ["revoke", "d1", "abc"]):
        result = model(*args, *home)
        assert result.exit_code == 2, args
        assert error_line(result).startswith("redfl: error: no deployment named d1 in ")


def lines_of(process: subprocess.Popen[str]) -> queue.Queue[str]:
    """The process's stdout lines as they come (read by a thread)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return lines


def take_until(lines: queue.Queue[str], prefix: str, seconds: float) -> list[str]:
    """The lines up to and with the first that starts with ``prefix``."""
    seen: list[str] = []

    def arrived() -> bool:
        while not lines.empty():
            seen.append(lines.get())
        return any(line.startswith(prefix) for line in seen)

    assert wait_until(arrived, seconds), seen
    return seen


def test_serve_on_the_embedded_instance_until_stopped_from_another_process(
    digits_run: Path, tmp_path: Path
) -> None:
    # as a user's shell: no cluster and no token settings (the session's ray.init sets
    # RAY_AUTH_MODE in this process, which would hand the instance the machine's token)
    drop = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = str(REPO)
    home, port = tmp_path / "home", free_port()
    redfl = [sys.executable, "-m", "redfl.cli", "model"]
    options = ["--name", "embedded", "--home", str(home), "--port", str(port)]
    serving = subprocess.Popen(
        [*redfl, "serve", str(digits_run), *options, "--replica-cpus", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        lines = lines_of(serving)
        shown = take_until(lines, "serving until Ctrl-C", 240.0)
        assert shown[-1] == "serving until Ctrl-C (or redfl model stop embedded)"
        url = f"http://127.0.0.1:{port}/embedded/predict"
        assert f"  POST {url}" in shown
        token = shown[shown.index(next(s for s in shown if s.startswith("token (shown"))) + 1]
        rows: Any = np.array(load_digits_arrays()[0][:2]).tolist()
        reply = httpx.post(url, json={"inputs": rows}, headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 200 and np.asarray(reply.json()["outputs"]).shape == (2, 10)
        listed = subprocess.run(
            [*redfl, "list", "--home", str(home)], capture_output=True, text=True, env=env
        )
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.splitlines()[1].split()[:4] == ["embedded", "RUNNING", "1", "running"]
        # the serving instance's own Ray token, kept for the processes that join it
        assert (home / "embedded" / "ray-token").stat().st_mode & 0o777 == 0o600
        assert "Token authentication" not in listed.stderr
        stopped = subprocess.run(
            [*redfl, "stop", "embedded", "--home", str(home)],
            capture_output=True,
            text=True,
            env=env,
        )
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.splitlines()[-1] == "stopped embedded"
        assert not (home / "embedded").exists()  # the serving process removed it
        assert serving.wait(timeout=120) == 0
        assert take_until(lines, "stopped embedded", 10.0)[-1] == "stopped embedded"
    finally:
        if serving.poll() is None:
            serving.kill()
            serving.wait()
