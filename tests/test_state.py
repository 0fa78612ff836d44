"""Per-client state: kept on the hosting worker across rounds, spilled to disk past a bound."""

from __future__ import annotations

import numpy as np
import pytest
from scale_nodes import Tally

from redfl import FedAvg, ResourcesConfig, StarFederation
from redfl.core.config import ConfigError
from redfl.core.seeding import round_rng
from redfl.run.config import load_config
from redfl.runtime.state import StateStore


def state(value: float, size: int = 4) -> dict[str, np.ndarray]:
    return {"c": np.full(size, value, np.float32)}


def test_the_least_recently_used_states_spill_past_the_bound(tmp_path):
    store = StateStore(memory_bytes=2 * 16, spill_dir=str(tmp_path))  # two states of 16 bytes
    for i in range(4):
        store.put(f"n{i}", state(i))
    assert store.spilled == 2 and store.resident_bytes == 32
    assert len(list(tmp_path.iterdir())) == 2
    store.get("n2")  # n2 becomes the most recent: n3 is now the oldest in memory
    assert store.get("n0")["c"].tolist() == [0.0] * 4  # read back from disk...
    assert store.spilled == 2  # ...which spilled n3
    assert store.get("n3")["c"].tolist() == [3.0] * 4
    assert len(store) == 4 and store.resident_bytes <= 32


def test_a_new_state_replaces_a_spilled_one_and_close_removes_the_folder():
    store = StateStore(memory_bytes=0)
    store.put("a", state(1))
    store.put("a", state(2))
    assert store.spilled == 1 and len(store) == 1
    assert store.get("a")["c"][0] == 2
    assert store.get("unknown") == {}
    folder = store._dir
    assert folder is not None and folder.exists()
    store.close()
    assert not folder.exists()


def test_a_state_that_is_not_numeric_arrays_is_refused():
    store = StateStore()
    with pytest.raises(TypeError, match=r"client state of 'a': 'x' must be a numeric array"):
        store.put("a", {"x": np.array(["text"])})
    with pytest.raises(ValueError, match="memory_bytes must be >= 0"):
        StateStore(memory_bytes=-1)


def test_the_state_bound_is_a_validated_config_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        '[client]\ntarget = "redfl.examples.digits:DigitsClient"\n'
        "[resources]\nclient_state_mb = -1\n"
    )
    with pytest.raises(ConfigError, match=r"resources\.client_state_mb"):
        load_config(path)


@pytest.mark.parametrize("bound_mb", [0.0, 64.0])
def test_stateful_clients_keep_their_state_across_rounds_and_spills(ray_session, bound_mb):
    clients, rounds, seed = 30, 4, 1
    strategy = FedAvg(fraction_fit=0.5, min_fit_clients=1, fraction_evaluate=1.0)
    fed = StarFederation(
        Tally,
        clients,
        initial_parameters={"w": np.zeros(3, np.float32)},
        strategy=strategy,
        resources=ResourcesConfig(num_workers=2, worker={"CPU": 0.5}, client_state_mb=bound_mb),
        seed=seed,
    )
    with fed:
        result = fed.train(rounds)
        stats = fed.worker_stats()
        loss, metrics = fed.evaluate()
    # Replay the sampling (a function of seed and round) and count each client's fits.
    ids = [f"client-{i}" for i in range(clients)]
    counts = dict.fromkeys(ids, 0)
    last = dict.fromkeys(ids, 0)
    for rnd in range(1, rounds + 1):
        sampled = strategy.configure_fit(rnd, ids, round_rng(seed, rnd))
        for node_id in sampled:
            counts[node_id] += 1
            last[node_id] = rnd
    assert result.parameters is not None
    # The last round's model is the mean of its clients' fit counts (1 if state were lost).
    expected = np.mean([counts[i] for i in sampled])
    assert expected > 1
    np.testing.assert_allclose(result.parameters["w"], expected, rtol=1e-6)
    # Evaluation reads the state too: rounds trained in and the last one, per client.
    assert loss == pytest.approx(np.mean(list(counts.values())))
    assert metrics["last_round"] == pytest.approx(np.mean(list(last.values())))
    kept = sum(s["states"] for s in stats)
    assert kept == sum(1 for c in counts.values() if c)
    spilled = sum(s["states_spilled"] for s in stats)
    assert spilled == (kept if bound_mb == 0 else 0)
