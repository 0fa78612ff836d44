"""``redfl`` as a user runs it: a whole process, from a folder of the user's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from waiting import wait_until

REDFL = str(Path(sys.executable).parent / "redfl")

USER_CLIENT = """
import time

import numpy as np
from redfl import Client


class MyClient(Client):
    def __init__(self, delay=0.0):
        self.delay = delay

    def fit(self, parameters, config):
        time.sleep(self.delay)
        return {"w": parameters["w"] + config["round"]}, 1, {"loss": 1.0}

    @staticmethod
    def initial_parameters(options):
        return {"w": np.zeros(2)}
"""


def user_folder(tmp_path: Path, runtime: str, rounds: int, delay: float) -> Path:
    """A folder with the user's client module and config, and a folder named ``redfl``."""
    (tmp_path / "redfl" / "examples").mkdir(parents=True)  # would shadow the package
    (tmp_path / "myclient.py").write_text(USER_CLIENT, encoding="utf-8")
    (tmp_path / "run.toml").write_text(
        f'[federation]\nname = "mine"\nrounds = {rounds}\nruntime = "{runtime}"\n'
        f'[client]\ntarget = "myclient:MyClient"\nnum_clients = 3\n'
        f"[client.options]\ndelay = {delay}\n",
        encoding="utf-8",
    )
    return tmp_path


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}


def test_user_module_imports_on_ray_workers_and_a_redfl_folder_does_not_shadow(
    tmp_path: Path,
) -> None:
    folder = user_folder(tmp_path, "ray", 2, 0.0)
    done = subprocess.run(
        [REDFL, "run", "run.toml", "--out", "out"],
        cwd=folder,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "SIGABRT" not in done.stderr
    summary = json.loads((folder / "out" / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["rounds"] == 2


def test_an_unreachable_cluster_fails_fast_with_one_line(tmp_path: Path) -> None:
    folder = user_folder(tmp_path, "ray", 1, 0.0)
    started = time.monotonic()
    done = subprocess.run(
        [REDFL, "run", "run.toml", "--address", "127.0.0.1:1", "--connect-timeout", "10"],
        cwd=folder,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - started < 60
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("redfl: error: "), done.stderr
    assert "127.0.0.1:1" in lines[0]
    assert not (folder / "runs").exists()


def test_first_ctrl_c_cancels_at_the_round_boundary(tmp_path: Path) -> None:
    folder = user_folder(tmp_path, "local", 50, 0.1)
    process = subprocess.Popen(
        [REDFL, "run", "run.toml", "--out", "out"],
        cwd=folder,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    events = folder / "out" / "events.jsonl"
    try:
        assert wait_until(lambda: events.exists() and "round_finished" in events.read_text(), 60)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    summary = json.loads((folder / "out" / "summary.json").read_text())
    assert summary["status"] == "cancelled" and 1 <= summary["rounds"] < 50
    assert (folder / "out" / "model.safetensors").exists()
    assert f"cancelled after {summary['rounds']} rounds" in out


def test_version_and_help() -> None:
    version = subprocess.run([REDFL, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("redfl 0.")
    helped = subprocess.run([REDFL, "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "run" in helped.stdout
    assert "``" not in helped.stdout
    run_help = subprocess.run([REDFL, "run", "--help"], capture_output=True, text=True, timeout=60)
    assert "``" not in run_help.stdout and "--connect-timeout" in run_help.stdout


def test_the_cli_and_a_script_write_the_same_run_folder(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    demo = str(repo / "examples" / "digits_fedavg.toml")
    script = str(repo / "examples" / "run_demo.py")
    for command in (
        [REDFL, "run", demo, "--rounds", "3", "--out", str(tmp_path / "cli")],
        [sys.executable, script, str(tmp_path / "script"), "3"],
    ):
        done = subprocess.run(
            command, env=environment(), capture_output=True, text=True, timeout=240
        )
        assert done.returncode == 0, done.stderr[-2000:]
    cli, script_run = tmp_path / "cli", tmp_path / "script"
    model = "model.safetensors"
    assert (cli / model).read_bytes() == (script_run / model).read_bytes()

    def untimed(folder: Path) -> list[dict[str, object]]:
        rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert len(untimed(cli)) == 3 and untimed(cli) == untimed(script_run)


BLOCK_EXTRAS = """
import sys, importlib.abc
EXTRAS = {"fastapi", "uvicorn", "httpx", "sqlalchemy", "starlette", "alembic", "argon2",
          "jwt", "prometheus_client", "torch", "flwr", "playwright", "schemathesis"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in EXTRAS:
            raise ImportError("not installed: " + name)
sys.meta_path.insert(0, Block())
sys.argv = ["redfl", "--help"]
from redfl.cli import main
main()
"""


def test_the_cli_needs_no_optional_extra() -> None:
    # `make run` installs what running needs only: no platform, edge, torch or test packages.
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_EXTRAS], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "run" in done.stdout and "strategies" in done.stdout
