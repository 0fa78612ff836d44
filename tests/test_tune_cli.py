"""The ``redfl tune`` command: bad input exits 2 naming it; a search prints its table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from redfl.cli import app
from redfl.run.search_space import ALLOWED_FORMS

CONFIG = """
[federation]
name = "tune-cli"
rounds = 2
runtime = "local"

[client]
target = "redfl.examples.digits:DigitsClient"
num_clients = 6

[client.options]
epochs = 1

[strategy]
name = "fedavg"

[evaluation]
central = "redfl.examples.digits:central_evaluation"
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["tune", *args])


def error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert lines and lines[-1].startswith("redfl: error: "), result.stderr
    return lines[-1]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "tune.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("client.options.lr=gauss:0:1", "unknown kind 'gauss'"),
        ("lr=choice:0.1,0.3", "dotted PATH"),
        ("client.options.lr=loguniform:0:1", "must be positive"),
    ],
)
def test_a_bad_param_exits_2_naming_it_and_the_allowed_forms(
    config: Path, tmp_path: Path, spec: str, reason: str
) -> None:
    result = invoke(str(config), "--param", spec, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    line = error_line(result)
    assert line.startswith(f"redfl: error: --param {spec!r}: ")
    assert reason in line
    assert line.endswith(f"allowed forms: {ALLOWED_FORMS}")
    assert not (tmp_path / "out").exists()


def test_a_value_the_config_refuses_exits_2_naming_the_field(config: Path) -> None:
    result = invoke(str(config), "--param", "client.options.epochs=choice:0,1")
    assert result.exit_code == 2
    assert "epochs" in error_line(result)


def test_a_bad_scheduler_exits_2(config: Path) -> None:
    result = invoke(str(config), "--param", "client.options.lr=choice:0.1", "--scheduler", "x")
    assert result.exit_code == 2
    assert error_line(result) == "redfl: error: scheduler: must be fifo, asha or pbt, got 'x'"


def test_tune_prints_the_table_and_the_best_config(
    ray_session: Any, config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "search"
    result = invoke(
        str(config),
        "--param",
        "client.options.lr=grid:0.05,0.3",
        "--samples",
        "1",
        "--driver-cpus",
        "0.5",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    header = lines[-4].split()
    assert header == ["trial", "client.options.lr", "status", "rounds", "accuracy", "folder"]
    rows = [line.split() for line in lines[-3:-1]]
    assert [row[1] for row in rows] == ["0.3", "0.05"]  # best accuracy first
    assert all(row[2] == "completed" and row[3] == "2" for row in rows)
    assert lines[-1].startswith(f"best {rows[0][0]}: accuracy {rows[0][4]} with ")
    assert "client.options.lr=0.3" in lines[-1]
    saved = json.loads((out / "tune.json").read_text(encoding="utf-8"))
    assert saved["best"] == rows[0][0]
    assert sorted(t["values"]["client.options.lr"] for t in saved["trials"]) == [0.05, 0.3]
    for trial in saved["trials"]:
        assert (Path(trial["folder"]) / "summary.json").is_file()
