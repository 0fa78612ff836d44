"""The ``redfl run`` command: exit codes, error lines and the run folder it writes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import Result
from typer.testing import CliRunner

from redfl.cli import app
from redfl.examples.digits import DigitsClient, DigitsOptions
from redfl.run.config import load_config
from redfl.run.folder import load_parameters

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "digits_fedavg.toml"

SUMMARY_KEYS = {"accuracy", "loss", "rounds", "clients", "wall_seconds"}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["run", *args])


def error_line(result: Result) -> str:
    """The one-line reason of a failed run: the last stderr line, and the only error line."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("redfl: error: ")]
    assert len(errors) == 1, result.stderr
    assert lines[-1] == errors[0], result.stderr
    return errors[0]


def substitute(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count == 1, f"{pattern!r} matched {count} times in the example config"
    return new


def local_config(tmp_path: Path, *, rounds: int = 3, extra: str = "") -> Path:
    """The example config on the local runtime, 10 IID clients, ``rounds`` rounds."""
    text = EXAMPLE.read_text(encoding="utf-8")
    text = substitute(text, r'^runtime = "ray"', 'runtime = "local"')
    text = substitute(text, r"^num_clients = \d+", "num_clients = 10")
    text = substitute(text, r'^partition = "\w+"', 'partition = "iid"')
    text = substitute(text, r"^rounds = \d+", f"rounds = {rounds}")
    text = substitute(text, r"^min_fit_clients = \d+", "min_fit_clients = 5")
    path = tmp_path / "digits_local.toml"
    path.write_text(text + extra, encoding="utf-8")
    cfg = load_config(path)
    assert cfg.federation.runtime == "local"
    assert cfg.client.num_clients == 10
    assert cfg.client.options["partition"] == "iid"
    assert cfg.federation.rounds == rounds
    return path


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(body, encoding="utf-8")
    return path


# -- bad input ------------------------------------------------------------------------------


def test_missing_file_exits_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    result = invoke(str(missing))
    assert result.exit_code == 2
    line = error_line(result)
    assert "not found" in line
    assert str(missing) in line


def test_invalid_toml_exits_2(tmp_path: Path) -> None:
    result = invoke(str(write_config(tmp_path, "[client\n")))
    assert result.exit_code == 2
    assert "not valid TOML" in error_line(result)


def test_bad_value_exits_2_naming_the_field(tmp_path: Path) -> None:
    path = local_config(tmp_path)
    path.write_text(
        substitute(path.read_text(encoding="utf-8"), r"^num_clients = 10", "num_clients = 0"),
        encoding="utf-8",
    )
    result = invoke(str(path), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "client.num_clients" in error_line(result)


def test_unknown_key_exits_2_naming_it(tmp_path: Path) -> None:
    path = local_config(tmp_path)
    path.write_text(path.read_text(encoding="utf-8") + "\n[resources.extra]\nfoo = 1\n")
    result = invoke(str(path), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "resources.extra: unknown key" in error_line(result)


def test_bad_client_option_exits_2_naming_it(tmp_path: Path) -> None:
    path = local_config(tmp_path)
    text = substitute(path.read_text(encoding="utf-8"), r"^lr = [\d.]+", "lr = -1.0")
    path.write_text(text, encoding="utf-8")
    result = invoke(str(path), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "client.options.lr" in error_line(result)


def test_unimportable_target_exits_2_naming_the_field(tmp_path: Path) -> None:
    path = local_config(tmp_path)
    text = substitute(
        path.read_text(encoding="utf-8"),
        r"^target = .*$",
        'target = "redfl.no_such_module:Client"',
    )
    path.write_text(text, encoding="utf-8")
    result = invoke(str(path), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    line = error_line(result)
    assert "client.target" in line
    assert "redfl.no_such_module" in line


def test_rounds_that_is_not_a_number_exits_2(tmp_path: Path) -> None:
    result = invoke(str(local_config(tmp_path)), "--rounds", "abc")
    assert result.exit_code == 2
    assert "--rounds" in result.stderr


def test_unknown_option_exits_2(tmp_path: Path) -> None:
    result = invoke(str(local_config(tmp_path)), "--epochs", "3")
    assert result.exit_code == 2
    assert "--epochs" in result.stderr


@pytest.mark.parametrize(
    ("option", "value", "field"),
    [("--rounds", "0", "federation.rounds"), ("--seed", "-1", "federation.seed")],
)
def test_bad_override_exits_2_naming_the_field(
    tmp_path: Path, option: str, value: str, field: str
) -> None:
    result = invoke(str(local_config(tmp_path)), option, value, "--out", str(tmp_path / "r"))
    assert result.exit_code == 2
    assert field in error_line(result)


def test_bad_address_exits_2(tmp_path: Path) -> None:
    result = invoke(str(local_config(tmp_path)), "--address", "no where", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "federation.address" in error_line(result)


def test_out_that_is_a_file_exits_2(tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("", encoding="utf-8")
    result = invoke(str(local_config(tmp_path)), "--out", str(blocker))
    assert result.exit_code == 2
    assert "run folder" in error_line(result)


def test_config_without_training_clients_fails_with_one_line(tmp_path: Path) -> None:
    # No client has the train role: the run cannot sample anyone. The CLI promises a
    # one-line reason and exit code 1 or 2, never a traceback.
    path = local_config(tmp_path)
    text = substitute(path.read_text(encoding="utf-8"), r'^roles = ".*"', 'roles = "eval"')
    path.write_text(text, encoding="utf-8")
    result = invoke(str(path), "--out", str(tmp_path / "run"))
    assert result.exit_code in (1, 2)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    error_line(result)


FAILING_CLIENT = """
import numpy as np
from redfl.nodes import Client


class AlwaysFails(Client):
    def __init__(self, **options):
        pass

    def fit(self, parameters, config):
        raise RuntimeError("sensor unplugged")

    @staticmethod
    def initial_parameters(options):
        return {"w": np.zeros(3, np.float32)}
"""


def test_federation_failure_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "redfl_failing_client.py"
    module.write_text(FAILING_CLIENT, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write_config(
        tmp_path,
        '[federation]\nruntime = "local"\nrounds = 2\n'
        '[client]\ntarget = "redfl_failing_client:AlwaysFails"\nnum_clients = 3\n',
    )
    result = invoke(str(config), "--out", str(tmp_path / "run"))
    assert result.exit_code == 1
    line = error_line(result)
    assert "round 1" in line
    assert "min_fit_clients" in line
    assert "sensor unplugged" in line
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "failed"
    assert "sensor unplugged" in summary["error"]
    failures = (tmp_path / "run" / "failures.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(failures) == 3 and all("sensor unplugged" in line for line in failures)


# -- a good run -----------------------------------------------------------------------------


def read_run(run_dir: Path) -> tuple[list[dict[str, object]], dict[str, object]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) for r in records)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    return records, summary


def test_good_run_writes_metrics_summary_and_model(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = invoke(str(local_config(tmp_path, rounds=3)), "--out", str(out))
    assert result.exit_code == 0, result.stderr

    records, summary = read_run(out)
    assert [r["round"] for r in records] == [1, 2, 3]
    for record in records:
        assert record["sampled"] == 10
        assert record["succeeded"] == 10
        assert isinstance(record["accuracy"], float)

    assert summary.keys() >= SUMMARY_KEYS
    assert summary["rounds"] == 3
    assert summary["clients"] == 10
    assert summary["accuracy"] == records[-1]["accuracy"]
    assert summary["loss"] == records[-1]["loss"]
    assert isinstance(summary["wall_seconds"], float)
    assert summary["wall_seconds"] >= 0
    assert isinstance(summary["accuracy"], float)
    assert summary["accuracy"] > 0.8

    parameters, metadata = load_parameters(out / "model.safetensors")
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    reference = DigitsClient.initial_parameters(DigitsOptions(**cfg["client"]["options"]))
    assert parameters.keys() == reference.keys()
    for name, array in reference.items():
        assert parameters[name].shape == array.shape
        assert parameters[name].dtype == array.dtype
        assert np.isfinite(parameters[name]).all()
        assert not np.array_equal(parameters[name], array)  # training moved the model
    assert metadata["accuracy"] == summary["accuracy"]
    assert metadata["rounds"] == 3

    assert "final accuracy" in result.stdout
    assert str(out) in result.stdout


def test_rounds_and_seed_overrides_are_reflected(tmp_path: Path) -> None:
    config = local_config(tmp_path, rounds=3)
    first, second = tmp_path / "a", tmp_path / "b"
    result = invoke(str(config), "--rounds", "2", "--seed", "7", "--out", str(first))
    assert result.exit_code == 0, result.stderr
    records, summary = read_run(first)
    assert [r["round"] for r in records] == [1, 2]
    assert summary["rounds"] == 2
    saved = json.loads((first / "config.json").read_text(encoding="utf-8"))
    assert saved["federation"]["rounds"] == 2
    assert saved["federation"]["seed"] == 7

    again = invoke(str(config), "--rounds", "2", "--seed", "7", "--out", str(second))
    assert again.exit_code == 0, again.stderr
    a, _ = load_parameters(first / "model.safetensors")
    b, _ = load_parameters(second / "model.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)

    other = invoke(str(config), "--rounds", "2", "--seed", "8", "--out", str(tmp_path / "c"))
    assert other.exit_code == 0, other.stderr
    c, _ = load_parameters(tmp_path / "c" / "model.safetensors")
    assert not all(np.array_equal(a[k], c[k]) for k in a)


SOMETIMES_FAILING_CLIENT = """
import numpy as np
from redfl.nodes import Client


class OddOnesFail(Client):
    def __init__(self, **options):
        pass

    def fit(self, parameters, config):
        if self.context.index % 2:
            raise RuntimeError(f"battery low on {self.node_id}")
        return parameters, 1, {}

    @staticmethod
    def initial_parameters(options):
        return {"w": np.zeros(3, np.float32)}
"""


def test_the_console_says_why_clients_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "redfl_odd_client.py").write_text(SOMETIMES_FAILING_CLIENT, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "odd.toml"
    config.write_text(
        '[federation]\nruntime = "local"\nrounds = 2\n'
        '[client]\ntarget = "redfl_odd_client:OddOnesFail"\nnum_clients = 10\n',
        encoding="utf-8",
    )
    result = invoke(str(config), "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "failed:" in line]
    assert len(lines) == 2 * 3  # the first three reasons of each round
    assert all("battery low on client-" in line for line in lines)
    assert result.stderr.count("and 2 more (failures.jsonl)") == 2
    failures = (tmp_path / "run" / "failures.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(failures) == 2 * 5


def test_a_run_in_a_process_connected_to_ray_leaves_that_instance_running(
    tmp_path: Path, ray_session: Any
) -> None:
    """`redfl run` called in a process that had joined Ray itself (a notebook, this test
    session) runs there and leaves the connection as it found it: only an instance the
    command started is the command's to stop."""
    total = ray_session.cluster_resources()["CPU"]
    path = local_config(tmp_path, rounds=1)
    config = substitute(path.read_text(encoding="utf-8"), r'^runtime = "local"', 'runtime = "ray"')
    path.write_text(config, encoding="utf-8")
    result = invoke(str(path), "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.stderr
    assert ray_session.is_initialized()
    assert ray_session.cluster_resources()["CPU"] == total
