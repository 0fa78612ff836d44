"""tree.json round trips, and every kind of malformed file is refused with a clear message."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from redfl.topology import TreeError, TreeFile, load_tree, parse_tree, relay_tree, save_tree


def written(tmp_path: Path, **shape: Any) -> tuple[TreeFile, Path]:
    tree = relay_tree(shape.get("depth", 2), 2, 3, shape.get("lcp_only", False))
    tree_file = TreeFile("demo", 9000, tree)
    path = tmp_path / "tree.json"
    save_tree(path, tree_file)
    return tree_file, path


@pytest.mark.parametrize("lcp_only", [False, True])
def test_round_trip(tmp_path: Path, lcp_only: bool) -> None:
    original, path = written(tmp_path, lcp_only=lcp_only)
    loaded = load_tree(path)
    assert loaded == original
    assert loaded.tree.sites == original.tree.sites  # tiers and relays rebuilt too
    assert load_tree(tmp_path) == original  # a folder holding tree.json
    assert not list(tmp_path.glob("*.partial"))


def test_file_format(tmp_path: Path) -> None:
    _, path = written(tmp_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert list(data) == ["project", "depth", "width", "clients", "lcp_only", "rp_port", "sites"]
    assert (data["project"], data["depth"], data["width"], data["clients"]) == ("demo", 2, 2, 3)
    assert (data["lcp_only"], data["rp_port"]) == (False, 9000)
    assert len(data["sites"]) == 25
    assert data["sites"][0] == {"name": "server", "kind": "server", "parent": None, "port": 9001}
    assert data["sites"][-1] == {
        "name": "lcp-2-2-3",
        "kind": "lcp",
        "parent": "agg-2-2",
        "port": 9025,
    }


def test_edited_ports_survive(tmp_path: Path) -> None:
    _, path = written(tmp_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["sites"][5]["port"] = 12345
    path.write_text(json.dumps(data), encoding="utf-8")
    loaded = load_tree(path)
    assert loaded.tree.site(data["sites"][5]["name"]).port == 12345
    save_tree(tmp_path / "again.json", loaded)
    assert load_tree(tmp_path / "again.json") == loaded


def edit(path: Path, change: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


MALFORMED = [
    (lambda d: d.pop("width"), "missing key 'width'"),
    (lambda d: d.update(depth="2"), "'depth' must be int, got '2'"),
    (lambda d: d.update(lcp_only=1), "'lcp_only' must be bool, got 1"),
    (lambda d: d.update(clients=True), "'clients' must be int, got True"),
    (lambda d: d.update(rp_port=70000), "rp_port 70000 is out of range 1..65535"),
    (lambda d: d.update(colour="red"), r"unknown keys \['colour'\]"),
    (lambda d: d.update(depth=0), "depth 0 is out of range 1 or more"),
    (lambda d: d.update(clients=4), "clients 4, lcp_only False make 29 sites, but 'sites' lis"),
    (lambda d: d["sites"].pop(), "make 25 sites, but 'sites' lists 24"),
    (lambda d: d["sites"][3].update(name="relay-9"), r"sites\[3\]: name 'relay-9', but the"),
    (lambda d: d["sites"][7].update(parent="server"), r"sites\[7\]: parent 'server', but the"),
    (lambda d: d["sites"][2].update(kind="relay"), r"sites\[2\]: kind 'relay', but the"),
    (lambda d: d["sites"][4].pop("port"), r"sites\[4\]: expected an object with keys"),
    (lambda d: d["sites"][4].update(port="x"), r"sites\[4\]: 'port' must be int, got 'x'"),
    (lambda d: d["sites"][4].update(port=9001), r"site 4 \('agg-2'\): port 9001 is not free"),
    (lambda d: d["sites"].__setitem__(1, ["relay-1"]), r"sites\[1\]: expected an object"),
]


@pytest.mark.parametrize(("change", "message"), MALFORMED)
def test_malformed_file_is_refused_naming_the_fault(
    tmp_path: Path, change: Any, message: str
) -> None:
    _, path = written(tmp_path)
    edit(path, change)
    with pytest.raises(TreeError, match=message) as caught:
        load_tree(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(TreeError, match=r"tree file not found: .*absent\.json"):
        load_tree(tmp_path / "absent.json")
    (tmp_path / "tree.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TreeError, match=r"tree\.json: not JSON: "):
        load_tree(tmp_path)
    (tmp_path / "tree.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(TreeError, match="expected a JSON object, got list"):
        load_tree(tmp_path / "tree.json")


def test_parse_tree_defaults_its_source_name() -> None:
    with pytest.raises(TreeError, match=r"^tree\.json: missing key 'project'$"):
        parse_tree({})


def test_tree_file_is_frozen() -> None:
    tree_file = TreeFile("p", 1, relay_tree(1, 2, 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        tree_file.project = "q"  # type: ignore[misc]
