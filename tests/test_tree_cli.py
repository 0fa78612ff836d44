"""``redfl tree``: exact analysis lines and JSON, option errors, the provisioning folder, and
refusals that write nothing."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from redfl.cli import app
from redfl.provision.folder import CLIENTS_PER_LCP, FILES
from redfl.run.config import parse_config
from redfl.topology import load_tree, relay_tree

KEYS = [
    "relays_leaf",
    "relays_nonleaf",
    "relays_total",
    "clients_leaf",
    "clients_nonleaf",
    "clients_total",
    "total_sites",
]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["tree", *args])


def error_line(result: Result) -> str:
    """The one stderr line of a refused command (exit 2, nothing on stdout)."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("redfl: error: ")
    return lines[0]


def everything_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# -- analysis ------------------------------------------------------------------------------------


def test_analysis_prints_exactly_three_lines(tmp_path: Path) -> None:
    result = invoke("-d", "2", "-w", "2", "-c", "3", "-a", "-r", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Relays:  leaf=4; non-leaf=2; total=6",
        "Clients: leaf=12; non-leaf=6; total=18",
        "Total Sites: 25",
    ]
    assert result.stderr == ""
    assert everything_under(tmp_path) == []  # analysis writes nothing


def test_analysis_lcp_only_long_options() -> None:
    result = invoke("--depth", "3", "--width", "3", "--clients", "2", "--lcp-only", "--analyze")
    assert result.stdout.splitlines() == [
        "Relays:  leaf=27; non-leaf=12; total=39",
        "Clients: leaf=54; non-leaf=0; total=54",
        "Total Sites: 94",
    ]


@pytest.mark.parametrize(
    ("depth", "width", "clients", "lcp_only"),
    [(1, 2, 2, False), (2, 2, 3, False), (3, 4, 5, True), (4, 7, 9, False), (5, 9, 9, False)],
)
def test_analysis_json(depth: int, width: int, clients: int, lcp_only: bool) -> None:
    args = ["-d", str(depth), "-w", str(width), "-c", str(clients), "-a", "--json"]
    result = invoke(*args, *(["-l"] if lcp_only else []))
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    data = json.loads(result.stdout)
    assert list(data) == KEYS
    relays = sum(width**k for k in range(1, depth + 1))
    aggregators = 0 if lcp_only else relays
    lcps = clients * width**depth
    assert data == {
        "relays_leaf": width**depth,
        "relays_nonleaf": relays - width**depth,
        "relays_total": relays,
        "clients_leaf": lcps,
        "clients_nonleaf": aggregators,
        "clients_total": aggregators + lcps,
        "total_sites": relays + aggregators + lcps + 1,
    }


def test_analysis_ignores_max_sites() -> None:
    result = invoke("-d", "5", "-w", "9", "-c", "9", "-a", "-m", "10")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "Total Sites: 664300"


# -- bad options ---------------------------------------------------------------------------------

SHAPE = ["-d", "2", "-w", "2", "-c", "3"]


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("depth", "0", "1..5"),
        ("depth", "6", "1..5"),
        ("width", "1", "2..9"),
        ("width", "12", "2..9"),
        ("clients", "1", "2..9"),
        ("clients", "10", "2..9"),
        ("clients", "-3", "2..9"),
    ],
)
def test_out_of_range_exits_2_naming_option_value_and_range(
    tmp_path: Path, option: str, value: str, allowed: str
) -> None:
    args = {"depth": "2", "width": "2", "clients": "3", option: value}
    for analyze in ([], ["-a"]):
        result = invoke(*(f"--{k}={v}" for k, v in args.items()), *analyze, "-r", str(tmp_path))
        line = error_line(result)
        assert line == f"redfl: error: --{option} {value} is out of range {allowed}"
    assert everything_under(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-w", "2", "-c", "3"], "--depth is required (range 1..5)"),
        (["-d", "2", "-c", "3", "-a"], "--width is required (range 2..9)"),
        (["-d", "2", "-w", "3"], "--clients is required (range 2..9)"),
        ([*SHAPE, "-m", "0"], "--max-sites 0 is out of range 1 or more"),
        ([*SHAPE, "--rp", "0"], "--rp 0 is out of range 1..65535"),
        ([*SHAPE, "--rp", "70000"], "--rp 70000 is out of range 1..65535"),
        ([*SHAPE, "-p", "a b"], "--project-name 'a b' must be 1 to 64 letters, digits"),
        ([*SHAPE, "-p", ".."], "--project-name '..' must be 1 to 64"),
        ([*SHAPE, "-p", "../up"], "--project-name '../up' must be 1 to 64"),
        ([*SHAPE, "--rp", "65520"], "--rp 65520: the 25 sites need ports 65521..65545, over 65535"),
    ],
)
def test_other_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    line = error_line(invoke(*args, "-r", str(tmp_path)))
    assert line.startswith(f"redfl: error: {message}")
    assert everything_under(tmp_path) == []


def test_over_max_sites_refuses_with_the_count_and_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "out"
    line = error_line(invoke("-d", "3", "-w", "3", "-c", "3", "-r", str(root)))
    assert line == "redfl: error: the tree has 160 sites, over --max-sites 100; nothing written"
    assert not root.exists()
    line = error_line(invoke(*SHAPE, "-m", "24", "-r", str(root)))
    assert "the tree has 25 sites, over --max-sites 24" in line
    assert not root.exists()
    result = invoke(*SHAPE, "-m", "25", "-r", str(root))  # the limit is inclusive
    assert result.exit_code == 0, result.stderr


# -- the provisioning folder ---------------------------------------------------------------------


def provision(tmp_path: Path, *extra: str) -> Path:
    result = invoke(*SHAPE, "-r", str(tmp_path), "-p", "demo", "--rp", "9100", *extra)
    assert result.exit_code == 0, result.stderr
    folder = tmp_path / "demo"
    assert result.stdout == (
        f"wrote {folder}: 25 sites (6 relays, 6 aggregators, 12 LCPs); routing proxy port 9100\n"
    )
    return folder


def test_writes_the_folder(tmp_path: Path) -> None:
    folder = provision(tmp_path)
    expected = ["demo", "demo/scripts", *(f"demo/{f}" for f in FILES)]
    assert everything_under(tmp_path) == sorted(expected)
    tree_file = load_tree(folder / "tree.json")
    assert (tree_file.project, tree_file.rp_port) == ("demo", 9100)
    assert tree_file.tree == relay_tree(2, 2, 3, base_port=9101)
    raw = json.loads((folder / "tree.json").read_text(encoding="utf-8"))
    assert raw["sites"][1] == {"name": "relay-1", "kind": "relay", "parent": "server", "port": 9102}


def test_lcp_map(tmp_path: Path) -> None:
    folder = provision(tmp_path)
    lcp_map = json.loads((folder / "lcp_map.json").read_text(encoding="utf-8"))
    tree = load_tree(folder).tree
    assert list(lcp_map) == [s.name for s in tree.lcps]
    assert len(lcp_map) == 12
    assert lcp_map["lcp-2-1-3"] == {"host": "127.0.0.1", "port": tree.site("lcp-2-1-3").port}
    ports = [entry["port"] for entry in lcp_map.values()]
    assert len(set(ports)) == 12 and 9100 not in ports
    assert all(set(entry) == {"host", "port"} for entry in lcp_map.values())


def test_hierarchy_toml(tmp_path: Path) -> None:
    folder = provision(tmp_path)
    data = tomllib.loads((folder / "hierarchy.toml").read_text(encoding="utf-8"))
    topology = data.pop("topology")
    assert topology == {
        "schema": "hierarchical",
        "tree_file": "tree.json",
        "clients_per_lcp": CLIENTS_PER_LCP,
    }
    assert (folder / topology["tree_file"]).is_file()
    assert data["client"]["target"] == "redfl.examples.digits:DigitsClient"
    assert data["client"]["num_clients"] == CLIENTS_PER_LCP * 12
    assert data["federation"]["name"] == "demo"
    config = parse_config(data)  # everything but [topology] is today's config shape
    assert config.strategy.name == "fedavg"
    assert config.evaluation.central == "redfl.examples.digits:central_evaluation"


def test_start_scripts(tmp_path: Path) -> None:
    folder = provision(tmp_path)
    scripts = folder / "scripts"
    for script in scripts.iterdir():
        assert script.stat().st_mode & stat.S_IXUSR, script
        subprocess.run(["bash", "-n", str(script)], check=True)
    assert 'exec redfl edge proxy --tree "$DIR" --port 9100' in (scripts / "start_rp.sh").read_text(
        encoding="utf-8"
    )
    assert 'exec redfl run "$DIR/hierarchy.toml" "$@"' in (scripts / "start_server.sh").read_text(
        encoding="utf-8"
    )
    site = str(scripts / "start_site.sh")
    usage = subprocess.run([site], capture_output=True, text=True, check=False)
    assert usage.returncode == 2
    assert f"SITE: a site name of {folder.resolve()}/tree.json" in usage.stderr
    unknown = subprocess.run([site, "agg-9", "auto"], capture_output=True, text=True, check=False)
    assert unknown.returncode == 2
    assert (
        unknown.stderr.strip() == f"start_site.sh: no site 'agg-9' in {folder.resolve()}/tree.json"
    )


def test_lcp_only_folder_and_json_summary(tmp_path: Path) -> None:
    result = invoke(*SHAPE, "-l", "-r", str(tmp_path), "-p", "edge", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["folder"] == str(tmp_path / "edge")
    assert summary["files"] == list(FILES)
    assert (summary["total_sites"], summary["clients_nonleaf"], summary["rp_port"]) == (19, 0, 9000)
    tree = load_tree(tmp_path / "edge").tree
    assert tree.lcp_only and tree.of_kind("aggregator") == ()
    assert tree.site("lcp-1-2-3").parent == "server"
    data = tomllib.loads((tmp_path / "edge" / "hierarchy.toml").read_text(encoding="utf-8"))
    assert data["client"]["num_clients"] == CLIENTS_PER_LCP * 12


def test_never_writes_into_a_non_empty_folder(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine", encoding="utf-8")
    line = error_line(invoke(*SHAPE, "-r", str(tmp_path), "-p", "demo"))
    assert line == f"redfl: error: {folder} exists and is not empty; refusing to write into it"
    assert everything_under(tmp_path) == ["demo", "demo/notes.txt"]
    assert (folder / "notes.txt").read_text(encoding="utf-8") == "mine"
    (tmp_path / "plain").write_text("a file", encoding="utf-8")
    line = error_line(invoke(*SHAPE, "-r", str(tmp_path), "-p", "plain"))
    assert line == f"redfl: error: {tmp_path / 'plain'} exists and is not a folder"
    assert (tmp_path / "plain").read_text(encoding="utf-8") == "a file"


def test_an_empty_folder_is_filled(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    provision(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["demo"]  # no staging folder left behind
    assert load_tree(tmp_path / "demo").project == "demo"


def test_default_root_dir_is_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(*SHAPE)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "hierarchy" / "tree.json").is_file()
