"""``redfl run`` with decentralised schemas: config keys, errors (exit 2), the run folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from building import decentralized_from_config
from click.testing import Result
from typer.testing import CliRunner

from redfl.cli import app
from redfl.core.config import ConfigError
from redfl.run.config import load_config
from redfl.run.folder import load_parameters
from redfl.schemas.decentralized import DecentralizedFederation
from redfl.schemas.named import CustomTopology

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = ["ring_dsgd", "mesh_gossip", "k_connect_gossip", "custom_ring_sequential", "custom_dsgd"]

GOSSIP = """
[federation]
rounds = {rounds}
seed = 4
runtime = "local"

[topology]
{topology}

[client]
target = "{target}"
num_clients = {n}
roles = "train"

[client.options]
{options}
"""


def write(tmp_path: Path, **fields: object) -> Path:
    values = {
        "rounds": 3,
        "topology": 'schema = "ring"\nalgorithm = "gossip"',
        "target": "redfl.nodes.decentralized:GossipNode",
        "n": 6,
        "options": "size = 4",
        **fields,
    }
    path = tmp_path / "run.toml"
    path.write_text(GOSSIP.format(**values), encoding="utf-8")
    return path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["run", *args])


def error_line(result: Result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("redfl: error: ")
    return line


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_builds_its_federation(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # topology files are relative to the repository root
    config = load_config(REPO / "examples" / f"{name}.toml")
    fed = decentralized_from_config(config)
    assert isinstance(fed, DecentralizedFederation)
    assert len(fed.nodes) == config.client.num_clients
    assert not fed.started


def test_gossip_run_writes_the_same_run_folder_as_the_star(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke(str(write(tmp_path)), "--out", str(out), "--rounds", "4")
    assert result.exit_code == 0, result.stderr
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["round"] for r in records] == [1, 2, 3, 4]
    assert all(r["succeeded"] == 6 for r in records)
    gaps = [r["metrics"]["neighbour_gap"] for r in records]
    assert gaps == sorted(gaps, reverse=True)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["rounds"] == 4 and summary["clients"] == 6
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["topology"]["schema"] == "ring" and config["topology"]["algorithm"] == "gossip"
    parameters, _ = load_parameters(out / "model.safetensors")
    # Gossip keeps the mean: the saved model is the mean of the seeded initial vectors.
    initial = [np.random.default_rng([4, i, 0x6055]).standard_normal(4) for i in range(6)]
    np.testing.assert_allclose(parameters["x"], np.mean(initial, axis=0), atol=1e-12)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"topology": 'schema = "ring"'}, "topology.algorithm: Field required"),
        ({"topology": 'schema = "tree"\nalgorithm = "gossip"'}, "topology.schema: Input should"),
        ({"topology": 'schema = "ring"\nalgorithm = "push"'}, "topology.algorithm: Input should"),
        (
            {"topology": 'schema = "k_connect"\nalgorithm = "gossip"'},
            "topology.k: Field required",
        ),
        (
            {"topology": 'schema = "k_connect"\nalgorithm = "gossip"\nk = 3', "n": 5},
            "topology: k_connect(5, 3) is impossible: n*k = 15 must be even",
        ),
        (
            {"topology": 'schema = "custom"\nalgorithm = "gossip"'},
            "topology.topology_file: Field required",
        ),
        (
            {"topology": 'schema = "custom"\nalgorithm = "gossip"\ntopology_file = "nope.csv"'},
            "topology: cannot read topology file /",
        ),
        (
            {"topology": 'schema = "mesh"\nalgorithm = "ring_sequential"'},
            "algorithm 'ring_sequential' needs a ring, not schema 'mesh'",
        ),
        (
            {"topology": 'schema = "ring"\nalgorithm = "dsgd"'},
            "client.target: redfl.nodes.decentralized:GossipNode is not a DSGDNode subclass",
        ),
        ({"options": "sise = 4"}, "client.options: unknown option(s) ['sise'] for GossipNode"),
        (
            {"topology": 'schema = "ring"\nalgorithm = "gossip"\ndirected = true'},
            "topology: gossip",
        ),
    ],
)
def test_bad_decentralised_config_exits_2_naming_the_field(
    tmp_path: Path, fields: dict[str, object], reason: str
) -> None:
    line = error_line(invoke(str(write(tmp_path, **fields))))
    if reason == "topology: gossip":  # a directed ring is refused by Metropolis-Hastings
        assert "needs an undirected graph" in line and "one-way edges" in line
    else:
        assert reason in line, line


def test_custom_file_with_other_node_count_names_both(tmp_path: Path) -> None:
    csv = tmp_path / "g.csv"
    csv.write_text("0,1,1\n1,0,1\n1,1,0\n", encoding="utf-8")
    topology = f'schema = "custom"\nalgorithm = "gossip"\ntopology_file = "{csv}"'
    line = error_line(invoke(str(write(tmp_path, topology=topology, n=4))))
    assert "client.num_clients: 4, but topology.topology_file has 3 nodes" in line


def test_custom_disconnected_file_is_refused_unless_allowed(tmp_path: Path) -> None:
    csv = tmp_path / "g.csv"
    csv.write_text("a,b,c,d\n0,1,0,0\n1,0,0,0\n0,0,0,1\n0,0,1,0\n", encoding="utf-8")
    topology = f'schema = "custom"\nalgorithm = "gossip"\ntopology_file = "{csv}"'
    line = error_line(invoke(str(write(tmp_path, topology=topology, n=4))))
    assert "disconnected" in line and "['c', 'd']" in line
    allowed = topology + "\nallow_disconnected = true"
    result = invoke(str(write(tmp_path, topology=allowed, n=4)), "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.stderr


def test_star_keys_on_a_graph_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path)
    text = path.read_text(encoding="utf-8") + '\n[evaluation]\ncentral = "a.b:c"\n'
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"evaluation\.central: central evaluation is for"):
        decentralized_from_config(load_config(path))


def test_relative_topology_file_is_read_beside_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "tri.csv").write_text("0,1,1\n1,0,1\n1,1,0\n", encoding="utf-8")
    topology = 'schema = "custom"\nalgorithm = "gossip"\ntopology_file = "tri.csv"'
    path = write(folder, topology=topology, n=3)
    monkeypatch.chdir(tmp_path)  # not the config's folder: a cwd-relative read would fail
    cfg = load_config(path)
    assert isinstance(cfg.topology, CustomTopology)
    assert cfg.topology.topology_file == str(folder / "tri.csv")
    fed = decentralized_from_config(cfg)
    assert fed.topology is not None and sorted(fed.topology.neighbours(fed.nodes[0].node_id))
    assert len(fed.nodes) == 3
