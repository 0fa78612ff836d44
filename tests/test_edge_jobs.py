"""Edge jobs on a standing deployment (server, relays, LCPs and proxy over TLS in one thread):
the user's own device class (the simulator, the Python form, ``redfl edge device`` as a
process), several jobs at once submitted, listed and aborted by the operator, each with its
run folder, a device of another class refused, failures recorded, a stall reported, and
relays that aggregate as the tree says with the same result as LCPs syncing directly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edge_devices import BrokenDevice, StepDevice
from edge_rig import NUMERIC, SECRET, ThreadedDeployment, provision, wait_until
from safetensors.numpy import save_file
from typer.testing import CliRunner

from redfl.core.config import ConfigError
from redfl.edge.cli import edge_app
from redfl.edge.device import Credentials, DeviceError, JobMismatch, Trainer, run
from redfl.edge.job import EdgeJob
from redfl.edge.jobs import JobSpec, build_job, read_job_file
from redfl.edge.protocol import JobReply, Status, decode_arrays, encode_arrays
from redfl.edge.server import MAX_JOB_BYTES, EdgeServer
from redfl.edge.simulator import SimulatorConfig, Summary, run_simulation
from redfl.edge.wire import JobSync, SyncRequest
from redfl.run.folder import load_parameters

STEP = "edge_devices:StepDevice"
LCPS = ["lcp-1-1", "lcp-1-2", "lcp-2-1", "lcp-2-2"]
runner = CliRunner()


def step_job(name: str, **fields: Any) -> JobSpec:
    """A job of :class:`edge_devices.StepDevice`: each version adds ``step * scale`` = 0.5."""
    base: dict[str, Any] = {
        "name": name,
        "client": STEP,
        "options": {"size": 4, "step": 0.25},
        "evaluate": "edge_devices:mean_of_w",
        "config": {"scale": 2.0},
        "num_updates_for_model": 2,
        "max_model_version": 3,
        "max_model_history": 3,
        "device_selection_size": 4,
        "staleness_weight": False,  # every update counts whole: the model is exact
    }
    return JobSpec.model_validate({**base, **fields})


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedDeployment]:
    folder = provision(tmp_path_factory.mktemp("tree"))
    deployment = ThreadedDeployment(step_job("first"), LCPS, folder, relays=True)
    yield deployment
    deployment.close()


def simulate(edge: ThreadedDeployment, job: str, client: Any = StepDevice, **kw: Any) -> Summary:
    config = SimulatorConfig(
        edge.url["proxy"], job, client, kw.pop("devices", 8), 8, SECRET, timeout=60, **kw
    )
    return run_simulation(config)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def jobs_cli(edge: ThreadedDeployment, *args: str) -> tuple[int, str]:
    server = ("--server", edge.url["server"], "--tree", str(edge.folder))
    result = runner.invoke(edge_app, ["jobs", *args, *server])
    return result.exit_code, result.output


def test_a_users_device_class_trains_the_job_and_the_job_writes_its_run_folder(
    edge: ThreadedDeployment,
) -> None:
    summary = simulate(edge, "first")
    assert summary.done and summary.version == 3 and not summary.failed, summary.error
    job = edge.job
    folder = job.folder
    metrics = lines(folder / "metrics.jsonl")
    assert [m["round"] for m in metrics] == [1, 2, 3]  # one line per version
    assert [m["metrics"]["mean"] for m in metrics] == pytest.approx([0.5, 1.0, 1.5])
    assert [m["loss"] for m in metrics] == pytest.approx([9.5, 9.0, 8.5])
    done = json.loads((folder / "summary.json").read_text())
    assert (done["status"], done["version"], done["client"]) == ("succeeded", 3, STEP)
    parameters, meta = load_parameters(folder / "model.safetensors")
    np.testing.assert_allclose(parameters["w"], np.full(4, 1.5, np.float32))
    assert meta["client"] == {"target": STEP, "options": {"size": 4, "step": 0.25}}
    assert meta["rounds"] == 3 and meta["job_id"] == job.job_id
    types = [e["type"] for e in lines(folder / "events.jsonl")]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("round_finished") == 3
    config = json.loads((folder / "config.json").read_text())
    assert config["client"] == STEP and config["config"] == {"scale": 2.0}


def test_the_python_form_runs_one_device_until_the_job_ends(edge: ThreadedDeployment) -> None:
    spec = step_job("solo", num_updates_for_model=1, max_model_version=2, device_selection_size=1)
    edge.server.submit(spec)
    outcome = run(edge.url["proxy"], Credentials("solo-1", secret=SECRET), StepDevice, "solo")
    assert (outcome.done, outcome.version, outcome.tasks, outcome.accepted) == (True, 2, 2, 2)
    np.testing.assert_allclose(outcome.parameters["w"], 1.0)  # two versions of +0.5
    with pytest.raises(
        DeviceError, match=r"job nope \(no job named 'nope' now\): gave up at the timeout"
    ):
        run(
            edge.url["proxy"], Credentials("solo-1", secret=SECRET), StepDevice, "nope", timeout=1.0
        )


def test_redfl_edge_device_is_one_real_device_process(
    edge: ThreadedDeployment, tmp_path: Path
) -> None:
    spec = step_job("proc", num_updates_for_model=1, max_model_version=2, device_selection_size=1)
    edge.server.submit(spec)
    credentials = tmp_path / "me.json"
    credentials.write_text(json.dumps({"device_id": "proc-1", "secret": SECRET}))
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"step": 0.5}))  # the device's own, over the job's
    tests = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests)])}
    device = [
        sys.executable,
        "-m",
        "redfl.edge.cli",
        "device",
        "--proxy",
        edge.url["proxy"],
        "--credentials",
        str(credentials),
        "--job",
        "proc",
        "--timeout",
        "60",
    ]
    done = subprocess.run(
        [*device, "--client", STEP, "--options", str(options)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("proc-1: 2 tasks, 2 accepted, 0 rejected, 0 failed")
    assert "ended at version 2" in done.stdout
    [job] = [j for j in edge.server.jobs.values() if j.spec.name == "proc"]
    np.testing.assert_allclose(job.fedbuff.parameters["w"], 2.0)  # its step: 0.5 * scale 2
    wrong = subprocess.run(
        [*device, "--client", NUMERIC], env=env, capture_output=True, text=True, timeout=120
    )
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1
    assert wrong.stderr.startswith(f"redfl: error: job {job.job_id} runs {STEP}; ")
    assert f"this device runs {NUMERIC}: start it with the job's class" in wrong.stderr


def test_a_device_of_another_class_gets_a_clear_error(edge: ThreadedDeployment) -> None:
    edge.server.submit(step_job("mismatch"))
    with pytest.raises(JobMismatch, match=f"runs {STEP}; this device runs {NUMERIC}"):
        run(edge.url["proxy"], Credentials("m-1", secret=SECRET), NUMERIC, "mismatch", timeout=30)
    with pytest.raises(JobMismatch, match=f"runs {STEP}; this device runs {NUMERIC}"):
        simulate(edge, "mismatch", NUMERIC, devices=2)
    result = runner.invoke(
        edge_app,
        [
            "simulate",
            "--proxy",
            edge.url["proxy"],
            "--job",
            "mismatch",
            "--client",
            NUMERIC,
            "--enroll-secret",
            SECRET,
            "--devices",
            "2",
            "--timeout",
            "30",
        ],
    )
    assert result.exit_code == 2
    assert result.output.startswith("redfl: error: job mismatch-") and NUMERIC in result.output


def test_several_jobs_at_once_submitted_listed_and_aborted_by_the_operator(
    edge: ThreadedDeployment, tmp_path: Path
) -> None:
    ids: dict[str, str] = {}
    for name in ("alpha", "beta", "gamma"):
        path = tmp_path / f"{name}.json"
        path.write_text(step_job(name).model_dump_json(exclude_none=True))
        code, out = jobs_cli(edge, "submit", str(path))
        assert code == 0, out
        ids[name] = out.split()[0]
        assert ids[name].startswith(f"{name}-") and out.split()[1].endswith(ids[name])
    code, out = jobs_cli(edge, "submit", str(tmp_path / "alpha.json"))
    assert code == 2 and f"a job named 'alpha' is running: {ids['alpha']}" in out
    code, out = jobs_cli(edge, "abort", ids["gamma"], "--reason", "wrong data")
    assert code == 0 and out.strip() == f"{ids['gamma']} cancelled at version 0"
    code, out = jobs_cli(edge, "abort", "no-such-job")
    assert code == 2 and "no job with id 'no-such-job'" in out
    results: dict[str, Summary] = {}
    threads = [
        threading.Thread(target=lambda n=n: results.__setitem__(n, simulate(edge, n)))
        for n in ("alpha", "beta")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results["alpha"].done and results["beta"].done
    code, out = jobs_cli(edge, "list", "--json")
    listed = {j["job_id"]: j for j in json.loads(out)}
    assert code == 0 and {listed[ids[n]]["status"] for n in ("alpha", "beta")} == {"succeeded"}
    assert listed[ids["gamma"]]["status"] == "cancelled"
    assert listed[ids["gamma"]]["error"] == "wrong data"
    for name in ("alpha", "beta"):
        folder = Path(listed[ids[name]]["folder"])
        assert [m["round"] for m in lines(folder / "metrics.jsonl")] == [1, 2, 3]
        assert set(edge.server.jobs[ids[name]].fedbuff.accepted_ids).isdisjoint(
            edge.server.jobs[ids["beta" if name == "alpha" else "alpha"]].fedbuff.accepted_ids
        )
    gamma = Path(listed[ids["gamma"]]["folder"])
    assert json.loads((gamma / "summary.json").read_text())["status"] == "cancelled"
    assert lines(gamma / "events.jsonl")[-1]["type"] == "run_cancelled"
    outcome = run(edge.url["proxy"], Credentials("late", secret=SECRET), StepDevice, "gamma")
    assert outcome.done and outcome.reason == "wrong data"  # a device of an aborted job
    code, out = jobs_cli(edge, "list")
    assert code == 0 and f"{ids['gamma']:32} cancelled" in out


def test_a_failing_fit_is_a_recorded_failure_and_the_job_goes_on(
    edge: ThreadedDeployment,
) -> None:
    spec = step_job("broken", client="edge_devices:BrokenDevice", device_selection_size=2)
    job = edge.server.submit(spec)
    outcome = run(
        edge.url["proxy"], Credentials("b-1", secret=SECRET), BrokenDevice, "broken", max_tasks=2
    )
    assert outcome.failed == ["RuntimeError: the sensor is unplugged"] * 2
    wait_until(lambda: job.failures == 2, what="two failures recorded")
    edge.server.abort(job.job_id, "broken sensors")
    failures = lines(job.folder / "failures.jsonl")
    assert [(f["node_id"], f["phase"], f["reason"]) for f in failures] == [
        ("b-1", "fit", "RuntimeError: the sensor is unplugged")
    ] * 2


def test_an_exhausted_pool_without_device_reuse_is_reported(tmp_path: Path) -> None:
    spec = step_job("stall", device_reuse=False, device_selection_size=2)
    server = EdgeServer(tmp_path)
    job = server.submit(spec)

    def sync(seq: int, **part: Any) -> None:
        request = SyncRequest(sender="a", boot="b", seq=seq, jobs={job.job_id: JobSync(**part)})
        server.sync(request)

    sync(0, offered={"a": ["d1", "d2"]})
    assert set(job.selector.selected) == {"d1", "d2"} and not job.stalled
    failures = [
        {"task_id": f"a.b.{i}", "device": d, "base_version": 0, "reason": "x"}
        for i, d in enumerate(("d1", "d2"))
    ]
    sync(1, failures=failures, offered={"a": ["d1", "d2"]})
    sync(2)
    assert job.stalled and job.summary()["stalled"] is True
    [stalled] = [e for e in lines(job.folder / "events.jsonl") if e["type"] == "job_stalled"]
    assert stalled["version"] == 0 and "device_reuse = false" in stalled["reason"]


def test_relays_aggregate_so_the_server_hears_the_trees_width(edge: ThreadedDeployment) -> None:
    first: EdgeJob = edge.job  # the module's first job, run through aggregating relays
    if first.running:
        assert simulate(edge, "first").done
    assert set(first.last) == {"relay-1", "relay-2"}  # the server's fan-in: the tree's width
    assert first.fedbuff.accepted == len(first.fedbuff.accepted_ids) >= 6


def test_direct_lcps_give_the_same_model_as_aggregating_relays(
    edge: ThreadedDeployment, tmp_path: Path
) -> None:
    direct = ThreadedDeployment(step_job("first"), LCPS, provision(tmp_path / "tree"))
    try:
        assert simulate(direct, "first").done
        assert set(direct.job.last) <= set(LCPS) and len(direct.job.last) >= 2
        np.testing.assert_allclose(
            direct.job.fedbuff.parameters["w"], edge.job.fedbuff.parameters["w"], rtol=1e-6
        )
        np.testing.assert_allclose(direct.job.fedbuff.parameters["w"], 1.5, rtol=1e-6)
    finally:
        direct.close()


def test_a_job_is_built_as_a_run_config_is_and_bad_fields_are_named(tmp_path: Path) -> None:
    built = build_job(step_job("b", options={"step": 2.0}))
    # the class's Options fill in the default size; its initial_parameters make version 0
    assert built.template is StepDevice and built.options == {"size": 3, "step": 2.0}
    np.testing.assert_array_equal(built.initial["w"], np.zeros(3, np.float32))
    with pytest.raises(ConfigError, match=r"options\.size: Input should be greater than or"):
        build_job(step_job("b", options={"size": 0}))
    with pytest.raises(ConfigError, match=r"invalid config: options\.colour: unknown key"):
        build_job(step_job("b", options={"colour": "red"}))
    with pytest.raises(ConfigError, match=r"client: redfl\.examples\.edge:digits_evaluation is"):
        build_job(step_job("b", client="redfl.examples.edge:digits_evaluation"))
    with pytest.raises(
        ConfigError,
        match="client: 'edge_devices:StepDevice': module edge_devices is not under an allowed",
    ):
        build_job(step_job("b"), allowed_prefixes=["redfl.examples"])
    refused = EdgeServer(tmp_path / "jobs", allowed_prefixes=["redfl."])
    with pytest.raises(
        ConfigError,
        match="evaluate: 'edge_devices:mean_of_w': module edge_devices is not under an allowed",
    ):
        refused.submit(step_job("b", client=NUMERIC, options={}))
    assert refused.listing() == []  # nothing was started


def test_a_job_file_may_name_its_initial_model(tmp_path: Path) -> None:
    save_file({"w": np.full(4, 7.0, np.float32)}, str(tmp_path / "start.safetensors"))
    job = step_job("m").model_dump(exclude_none=True)
    (tmp_path / "job.json").write_text(
        json.dumps({**job, "initial_parameters": "start.safetensors"})
    )
    spec, model = read_job_file(tmp_path / "job.json")
    assert spec.initial_parameters is None and model is not None
    submitted = EdgeServer(tmp_path / "jobs").submit(spec, model)
    np.testing.assert_array_equal(submitted.fedbuff.parameters["w"], np.full(4, 7.0))
    (tmp_path / "job.json").write_text(json.dumps({**job, "initial_parameters": "none.st"}))
    with pytest.raises(ConfigError, match=r"job.json: initial_parameters: .*none.st"):
        read_job_file(tmp_path / "job.json")
    save_file({"w": np.full(4, np.nan, np.float32)}, str(tmp_path / "nan.safetensors"))
    (tmp_path / "job.json").write_text(json.dumps({**job, "initial_parameters": "nan.safetensors"}))
    with pytest.raises(ConfigError, match="'w' holds a NaN or infinite value"):
        read_job_file(tmp_path / "job.json")


def test_the_example_job_file_builds_and_its_device_class_learns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    examples = Path(__file__).parent.parent / "examples"
    monkeypatch.syspath_prepend(str(examples))
    spec, model = read_job_file(examples / "edge_job.json")
    built = build_job(spec, model)
    assert built.evaluate is not None and spec.client == "edge_device:LinearDevice"
    reply = JobReply(status=Status.OK, job_id="j", client=spec.client, options=built.options)
    devices = [Trainer(built.template, reply, f"d{i}", None, i, 8) for i in range(8)]
    parameters = built.initial
    before = built.evaluate(parameters)[0]
    for version in range(10):  # what the devices' fit and a plain mean of their updates do
        task = {
            "task_id": "t",
            "model_version": version,
            "config": spec.config,
            "parameters": encode_arrays(parameters),
        }
        updates = [decode_arrays(device.train(task)["parameters"]) for device in devices]
        parameters = {
            k: v + np.mean([u[k] for u in updates], axis=0) for k, v in parameters.items()
        }
    assert built.evaluate(parameters)[0] < before / 10
    failed = Trainer(built.template, reply, "d9", {"epochs": 1}, 0, 8).train(
        {**task, "config": {"lr": "x"}}
    )
    assert failed["error"].startswith("ValueError: could not convert string to float")


def test_the_jobs_routes_check_the_caller_then_the_length_before_the_body(
    edge: ThreadedDeployment,
) -> None:
    big = b"{" + b" " * 70_000 + b"}"
    url = f"{edge.url['server']}/jobs/abort"
    with edge.client("lcp-1-1") as client:  # a member of the tree, but not the operator
        refused = client.post(url, content=big, headers={"content-type": "application/json"})
    assert refused.status_code == 401
    assert (
        refused.json()["reason"]
        == "lcp 'lcp-1-1': kind 'lcp' is not accepted here (accepted: operator)"
    )
    with edge.client("operator") as client:
        too_big = client.post(url, content=big, headers={"content-type": "application/json"})
    assert too_big.status_code == 413 and too_big.json() == {
        "status": "INVALID_REQUEST",
        "reason": "body too large: /jobs/abort takes at most 65,536 bytes",
    }
    schema = edge.server_app.openapi()["paths"]["/jobs"]["post"]["responses"]
    assert schema["413"]["description"] == f"A body over {MAX_JOB_BYTES:,} bytes (not read)"
