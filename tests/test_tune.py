"""``redfl.tune`` on the session's Ray instance: trials, ASHA stops, PBT restores, cleanup."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from waiting import wait_until

from redfl.core.config import ConfigError
from redfl.core.server_state import load_state
from redfl.run.recorder import read_events
from redfl.run.tuning import TrialOutcome, tune

DIGITS = {
    "federation": {"name": "tune-digits", "rounds": 3, "seed": 0},
    "client": {
        "target": "redfl.examples.digits:DigitsClient",
        "num_clients": 10,
        "options": {"epochs": 1, "lr": 0.3, "batch_size": 16},
    },
    "strategy": {"name": "fedavg"},
    "evaluation": {"central": "redfl.examples.digits:central_evaluation"},
    "resources": {"worker": {"CPU": 0.5}},
}
SMALL: dict[str, Any] = {"driver_cpus": 0.5, "workers": 1}


def _leftovers(ray: Any) -> tuple[int, int]:
    """(placement groups not removed, actors alive) in the session's Ray instance.

    The actor table is read from the GCS directly (``ray.util.state`` needs the dashboard,
    which the session's instance does not run).
    """
    from ray._private.state import actors

    groups = [g for g in ray.util.placement_group_table().values() if g["state"] != "REMOVED"]
    alive = [a for a in actors().values() if a["State"] == "ALIVE"]
    return len(groups), len(alive)


def _metrics(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_four_trials_of_three_rounds_each_write_a_run_folder(
    ray_session: Any, tmp_path: Path
) -> None:
    before = _leftovers(ray_session)
    outcome = tune(
        DIGITS,
        ["client.options.lr=choice:0.1,0.3", "strategy.fraction_fit=uniform:0.5:1.0"],
        samples=4,
        out=tmp_path,
        **SMALL,
    )
    assert len(outcome.trials) == 4
    for trial in outcome.trials:
        assert trial.status == "completed", trial.error
        assert trial.rounds == 3
        assert trial.values["client.options.lr"] in (0.1, 0.3)
        assert 0.5 <= trial.values["strategy.fraction_fit"] <= 1.0
        summary = json.loads((trial.folder / "summary.json").read_text(encoding="utf-8"))
        assert summary["status"] == "succeeded"
        assert summary["rounds"] == 3
        assert summary["accuracy"] == pytest.approx(trial.metric)
        config = json.loads((trial.folder / "config.json").read_text(encoding="utf-8"))
        assert config["client"]["options"]["lr"] == trial.values["client.options.lr"]
        assert config["resources"]["placement_group"] == "current"
    assert outcome.best is not None
    assert outcome.best.metric == max(t.metric or 0.0 for t in outcome.trials)
    assert wait_until(lambda: _leftovers(ray_session) == before, 30.0), _leftovers(ray_session)


def test_asha_stops_the_trial_that_trails(ray_session: Any, tmp_path: Path) -> None:
    # One trial at a time, in grid order: the good lr reaches round 1 first, so the tiny
    # lr's loss is below the rung's cutoff there and ASHA stops it after one round.
    before = _leftovers(ray_session)
    outcome = tune(
        DIGITS,
        ["client.options.lr=grid:0.3,0.0001"],
        samples=1,
        scheduler="asha",
        metric="loss",
        mode="min",
        max_concurrent=1,
        out=tmp_path,
        **SMALL,
    )
    by_lr = {t.values["client.options.lr"]: t for t in outcome.trials}
    assert by_lr[0.3].status == "completed" and by_lr[0.3].rounds == 3
    stopped = by_lr[0.0001]
    assert stopped.status == "stopped"
    assert stopped.rounds < 3
    assert len(_metrics(stopped.folder)) == stopped.rounds
    assert outcome.best is by_lr[0.3]
    # The stopped trial's workers went with its placement group.
    assert wait_until(lambda: _leftovers(ray_session) == before, 30.0), _leftovers(ray_session)


FEDADAM: dict[str, Any] = {
    "federation": {"name": "tune-pbt", "rounds": 3, "seed": 0},
    "client": {
        "target": "redfl.examples.digits:DigitsClient",
        "num_clients": 4,
        "options": {"epochs": 1, "lr": 0.3},
    },
    "strategy": {"name": "fedadam"},
    "evaluation": {"central": "redfl.examples.digits:central_evaluation"},
    "resources": {"worker": {"CPU": 0.5}},
}


@dataclass(frozen=True)
class Exploit:
    """A finished PBT search of two trials in which one exploited the other at round 2."""

    donor: Path
    """The donor trial's own run folder."""
    resumed: Path
    """The exploiting trial's folder from round 2 on."""
    trials: list[TrialOutcome]


@pytest.fixture(scope="module")
def exploit(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Exploit:
    # tau = 100 keeps FedAdam's steps near zero, so that trial is the worse half at round
    # 2 for any eta; it then takes the other trial's round-2 checkpoint and values
    # (tau = 0.001), with eta mutated, and runs round 3.
    out = tmp_path_factory.mktemp("pbt")
    outcome = tune(
        FEDADAM,
        ["strategy.tau=grid:0.001,100", "strategy.eta=uniform:0.01:0.05"],
        samples=1,
        scheduler="pbt",
        metric="loss",
        mode="min",
        perturbation_interval=2,
        overrides={"runtime": "local"},  # clients in the trial's own process: fewer to start
        out=out,
        **SMALL,
    )
    # A trial's own folder keeps the values it started with; PBT may change them later.
    worse = next(t for t in outcome.trials if _strategy(t.folder)["tau"] == 100)
    donor = next(t for t in outcome.trials if _strategy(t.folder)["tau"] == 0.001)
    return Exploit(donor.folder, out / f"{worse.trial_id}-from-round-2", outcome.trials)


def test_pbt_restarts_the_worse_trial_from_the_donors_whole_state(exploit: Exploit) -> None:
    assert len(exploit.trials) == 2
    assert all(t.status == "completed" and t.rounds == 3 for t in exploit.trials), exploit
    resumed = exploit.resumed
    assert resumed.is_dir(), sorted(p.name for p in resumed.parent.iterdir())
    started = next(e for e in read_events(resumed) if e["type"] == "run_started")
    assert (started["first_round"], started["rounds"]) == (3, 3)
    assert _strategy(resumed)["tau"] == 0.001  # the donor's value
    # The state it started from is the donor's round-2 checkpoint, bit for bit.
    given = load_state(exploit.donor / "checkpoints" / "round-000002")
    start = load_state(resumed / "checkpoints" / "round-000002")
    end = load_state(resumed / "checkpoints" / "round-000003")
    for key in ("m", "v"):
        assert sorted(start.strategy_state[key]) == ["bias", "weight"]
        for name, array in given.strategy_state[key].items():
            np.testing.assert_array_equal(start.strategy_state[key][name], array)
    for name, array in given.parameters.items():
        np.testing.assert_array_equal(start.parameters[name], array)
    # Its history continues the donor's: rounds 1-2 are the donor's records, then round 3.
    assert [r.round for r in end.history] == [1, 2, 3]
    assert end.history[:2] == given.history
    assert _metrics(resumed)[:2] == _metrics(exploit.donor)[:2]
    assert len(_metrics(resumed)) == 3
    # Round 3 moved on from the carried moments: with d the round's pseudo-gradient,
    # m3 = b1 m2 + (1 - b1) d and v3 = b2 v2 + (1 - b2) d^2 (FedAdam's defaults 0.9, 0.99).
    b1, b2 = 0.9, 0.99
    for name in ("weight", "bias"):
        m2, v2 = start.strategy_state["m"][name], start.strategy_state["v"][name]
        m3, v3 = end.strategy_state["m"][name], end.strategy_state["v"][name]
        d = (m3 - b1 * m2) / (1 - b1)
        np.testing.assert_allclose(v3, b2 * v2 + (1 - b2) * d * d, rtol=1e-9, atol=1e-15)


def test_pbt_applies_the_mutated_value_after_the_restore(exploit: Exploit) -> None:
    mutated, original = _strategy(exploit.resumed), _strategy(exploit.donor)
    assert mutated["eta"] != original["eta"]  # perturbed ...
    assert 0.01 <= mutated["eta"] <= 0.05  # ... and kept within its range
    start = load_state(exploit.resumed / "checkpoints" / "round-000002")
    end = load_state(exploit.resumed / "checkpoints" / "round-000003")
    for name in ("weight", "bias"):
        # Round 3's step from the carried state used the new eta:
        # x3 = x2 + eta m3 / (sqrt(v3) + tau), as FedAdam computes it.
        x2 = start.parameters[name]
        m3, v3 = end.strategy_state["m"][name], end.strategy_state["v"][name]

        def step(eta: float, x2: Any = x2, m3: Any = m3, v3: Any = v3) -> Any:
            return (x2 + eta * m3 / (np.sqrt(v3) + mutated["tau"])).astype(x2.dtype)

        np.testing.assert_array_equal(end.parameters[name], step(mutated["eta"]))
        assert not np.array_equal(end.parameters[name], step(original["eta"]))


def _strategy(folder: Path) -> dict[str, Any]:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return dict(config["strategy"])


def test_bad_options_fail_before_any_trial(ray_session: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scheduler: must be fifo, asha or pbt, got 'hyper'"):
        tune(DIGITS, ["client.options.lr=choice:0.1"], scheduler="hyper", out=tmp_path)
    with pytest.raises(ConfigError, match="lr"):
        tune(DIGITS, ["client.options.lr=choice:-1,0.1"], out=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_current_placement_group_outside_a_trial_is_refused(ray_session: Any) -> None:
    from redfl.run.prepare import prepare
    from redfl.runtime.resources import ResourceError

    config = {**DIGITS, "resources": {"placement_group": "current"}}
    federation = prepare(config).federation
    with pytest.raises(ResourceError, match="needs a driver that runs inside a placement group"):
        federation.train(1)
    federation.stop()


def test_pbt_perturbations_stay_within_the_given_ranges() -> None:
    from redfl.run.search_space import parse_params
    from redfl.runtime.tune import within_bounds

    params = parse_params(["a.x=uniform:0.6:1.0", "a.n=randint:1:4", "a.c=choice:5,6"])
    assert within_bounds(params, {"a.x": 1.2, "a.n": 7, "a.c": 6}) == {
        "a.x": 1.0,
        "a.n": 3,
        "a.c": 6,
    }
    assert within_bounds(params, {"a.x": 0.48, "a.n": 0.8, "a.c": 5}) == {
        "a.x": 0.6,
        "a.n": 1,
        "a.c": 5,
    }
    assert within_bounds(params, {"a.x": 0.7, "a.n": 2, "a.c": 5})["a.x"] == 0.7
