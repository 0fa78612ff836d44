"""Checkpoints and exact resume: a resumed run equals one that was never interrupted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from waiting import wait_until

from redfl.core.config import ConfigError
from redfl.core.events import Event, RoundFinished
from redfl.core.server_state import load_state
from redfl.run.api import run
from redfl.run.checkpoints import latest_checkpoint
from redfl.run.folder import load_parameters
from redfl.run.recorder import read_events
from redfl.schemas.callbacks import Callback

REDFL = str(Path(sys.executable).parent / "redfl")
TESTS = Path(__file__).resolve().parent


def digits(strategy: dict[str, Any], privacy: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "federation": {"name": "r", "rounds": 6, "seed": 3, "runtime": "local"},
        "client": {
            "target": "redfl.examples.digits:DigitsClient",
            "num_clients": 8,
            "options": {"partition": "iid", "lr": 0.3, "epochs": 1, "batch_size": 16},
        },
        "strategy": {"min_fit_clients": 2, "fraction_fit": 0.5, **strategy},
        "evaluation": {"central": "redfl.examples.digits:central_evaluation"},
    }
    if privacy:
        config["privacy"] = privacy
    return config


def momentum() -> dict[str, Any]:
    return {
        "federation": {"name": "m", "rounds": 6, "seed": 1, "runtime": "local"},
        "client": {"target": "resume_clients:MomentumClient", "num_clients": 6},
        "strategy": {"name": "fedavg", "fraction_fit": 0.5, "min_fit_clients": 2},
        "resources": {"client_state_mb": 0.0},  # every client state spills to disk
    }


def dsgd_ring() -> dict[str, Any]:
    return {
        "federation": {"name": "d", "rounds": 6, "seed": 2, "runtime": "local"},
        "client": {
            "target": "redfl.examples.digits_decentralized:DigitsDSGDNode",
            "num_clients": 4,
            "options": {"partition": "iid", "lr": 0.3, "epochs": 1},
        },
        "topology": {"schema": "ring", "algorithm": "dsgd"},
    }


def dsgd_ring_checkpointed() -> dict[str, Any]:
    config = dsgd_ring()
    config["federation"]["checkpoint_every"] = 2  # nodes wait at rounds 2 and 4
    return config


def in_a_tree(config: dict[str, Any], lcps: int) -> dict[str, Any]:
    """``config``'s clients under the LCPs of a depth-1, width-2 relay tree."""
    config["topology"] = {"schema": "hierarchical", "depth": 1, "width": 2, "lcps": lcps}
    return config


CONFIGS: dict[str, Callable[[], dict[str, Any]]] = {
    "hierarchy-fedadam": lambda: in_a_tree(digits({"name": "fedadam", "eta": 0.05}), 2),
    "hierarchy-stateful-clients": lambda: in_a_tree(momentum(), 3),
    "dsgd-ring": dsgd_ring,
    "dsgd-ring-checkpointed": dsgd_ring_checkpointed,
    "fedavg": lambda: digits({"name": "fedavg"}),
    "fedadam": lambda: digits({"name": "fedadam", "eta": 0.05}),
    "dp-adaptive": lambda: digits(
        {"name": "fedavg"},
        {"mode": "adaptive", "side": "client", "noise_multiplier": 0.3, "clipping_norm": 2.0},
    ),
    "stateful-clients": momentum,
    "stateful-clients-ray": lambda: {**momentum(), "federation": {"name": "m", "rounds": 6}},
}


class CancelAfter(Callback):
    def __init__(self, cancel: threading.Event, rnd: int) -> None:
        self.cancel, self.rnd = cancel, rnd

    def on_event(self, event: Event) -> bool | None:
        if isinstance(event, RoundFinished) and event.record.round == self.rnd:
            self.cancel.set()
        return None


def untimed(folder: Path) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def same_arrays(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_arrays(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same_arrays(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_resumed_run_is_bit_identical_to_an_uninterrupted_one(
    tmp_path: Path, name: str, request: pytest.FixtureRequest
) -> None:
    if name.endswith("-ray"):
        request.getfixturevalue("ray_session")
    config = CONFIGS[name]()
    straight = run(config, out=tmp_path / "straight")
    assert straight.status == "succeeded", straight.error
    cancel = threading.Event()
    first = run(config, out=tmp_path / "cut", callbacks=[CancelAfter(cancel, 2)], cancel=cancel)
    assert first.status == "cancelled"
    if name == "dsgd-ring":  # nodes run ahead of the driver: they stop where it sees them
        assert 2 <= first.summary["rounds"] <= 6
    else:  # clients are driven round by round; checkpointed nodes wait at round 2
        assert first.summary["rounds"] == 2
    resumed = run(resume=tmp_path / "cut")
    assert resumed.status == "succeeded", resumed.error
    assert resumed.result is not None and straight.result is not None
    assert resumed.result.parameters_equal(straight.result)
    assert untimed(tmp_path / "cut") == untimed(tmp_path / "straight")
    end_a = load_state(latest_checkpoint(tmp_path / "straight"))  # type: ignore[arg-type]
    end_b = load_state(latest_checkpoint(tmp_path / "cut"))  # type: ignore[arg-type]
    assert end_a.round == end_b.round == 6
    assert same_arrays(end_a.strategy_state, end_b.strategy_state)
    assert same_arrays(end_a.extra, end_b.extra)
    if name.startswith("dsgd"):
        assert len(end_b.extra["node_states"]) == 4
    if "stateful-clients" in name:
        assert len(end_b.extra["client_states"]) >= 3  # every client sampled so far
    types = [e["type"] for e in read_events(tmp_path / "cut")]
    assert types.count("run_started") == 2 and types[-1] == "run_finished"


def test_resume_refuses_a_changed_config_naming_the_fields(tmp_path: Path) -> None:
    config = CONFIGS["fedavg"]()
    run(config, out=tmp_path / "done")
    changed = CONFIGS["fedavg"]()
    changed["federation"]["seed"] = 4
    changed["strategy"]["fraction_fit"] = 1.0
    with pytest.raises(ConfigError, match=r"federation\.seed, strategy\.fraction_fit"):
        run(changed, resume=tmp_path / "done")
    more_rounds = CONFIGS["fedavg"]()
    more_rounds["federation"]["rounds"] = 8  # rounds do not change the first six
    assert run(more_rounds, resume=tmp_path / "done").summary["rounds"] == 8


SLOW = """
[federation]
name = "killed"
rounds = 10
seed = 5
runtime = "local"
checkpoint_every = 2

[client]
target = "resume_clients:MomentumClient"
num_clients = 4

[client.options]
delay = 0.05

[strategy]
name = "fedadam"
eta = 0.05
"""


def test_a_killed_redfl_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    config = tmp_path / "slow.toml"
    config.write_text(SLOW, encoding="utf-8")
    env = {"PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen(
        [REDFL, "run", str(config), "--out", str(tmp_path / "run")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: (tmp_path / "run/checkpoints/round-000004").is_dir(), 120)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not (tmp_path / "run" / "summary.json").exists()  # it really died mid-run
    done = subprocess.run(
        [REDFL, "run", "--resume", str(tmp_path / "run")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    straight = run(config, out=tmp_path / "straight")
    resumed_model, _ = load_parameters(tmp_path / "run" / "model.safetensors")
    assert straight.result is not None and straight.result.parameters is not None
    assert same_arrays(resumed_model, straight.result.parameters)
    assert untimed(tmp_path / "run") == untimed(tmp_path / "straight")
    bad = subprocess.run(
        [REDFL, "run", str(config), "--resume", str(tmp_path / "run"), "--seed", "9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "federation.seed" in bad.stderr
