"""The star schema on real Ray: the digits demo, and ``local`` as the oracle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from redfl import FedAvg, ResourcesConfig, StarFederation
from redfl.examples.digits import DigitsClient, DigitsOptions, central_evaluation
from redfl.run.folder import load_parameters

ROOT = Path(__file__).resolve().parent.parent


def digits_star(runtime: str, workers: int) -> StarFederation:
    options = DigitsOptions(partition="dirichlet", alpha=0.5, min_size=5, lr=0.3, batch_size=8)
    return StarFederation(
        DigitsClient,
        12,
        initial_parameters=DigitsClient.initial_parameters(options),
        strategy=FedAvg(fraction_fit=0.75, min_fit_clients=2, fraction_evaluate=0.5),
        options=options.model_dump(),
        evaluate_fn=central_evaluation(options),
        seed=3,
        runtime=runtime,
        resources=ResourcesConfig(num_workers=workers, worker={"CPU": 0.5}),
    )


def test_local_and_ray_give_bit_identical_parameters(ray_session):
    results = {}
    for runtime in ("local", "ray"):
        fed = digits_star(runtime, workers=3)
        try:
            results[runtime] = fed.train(4)
        finally:
            fed.stop()
    local, remote = results["local"], results["ray"]
    assert local.parameters_equal(remote)
    assert [r.sampled for r in remote.history] == [9, 9, 9, 9]
    assert [r.accuracy for r in local.history] == [r.accuracy for r in remote.history]
    assert remote.final is not None and "federated_accuracy" in remote.final.metrics
    # The model moved: training did something.
    assert remote.parameters is not None and float(abs(remote.parameters["weight"]).sum()) > 0


def test_the_digits_demo_reaches_090_through_the_cli(ray_session, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "redfl.cli", "run", str(ROOT / "examples/digits_fedavg.toml")),
            *("--address", address, "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 20 and summary["clients"] == 100
    assert summary["accuracy"] >= 0.90
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == list(range(1, 21))
    parameters, metadata = load_parameters(out / "model.safetensors")
    assert parameters["weight"].shape == (64, 10)
    assert metadata["accuracy"] == summary["accuracy"]
    assert f"final accuracy {summary['accuracy']:.4f}" in proc.stdout


def test_the_readme_quickstart_runs(ray_session):
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples/quickstart.py")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rounds = [line for line in proc.stdout.splitlines() if line.startswith("round ")]
    assert len(rounds) == 10
    assert float(rounds[-1].split()[3]) > 0.8  # accuracy of the last round
    assert "failures: 0" in proc.stdout
