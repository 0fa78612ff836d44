"""``tree.json``: a provisioned relay tree on disk, read back exactly. No Ray.

Format (written by ``redfl tree``)::

    {"project": "demo", "depth": 2, "width": 2, "clients": 3, "lcp_only": false,
     "rp_port": 9000,
     "sites": [{"name": "server", "kind": "server", "parent": null, "port": 9001}, ...]}

``sites`` lists every site in site order (see :mod:`redfl.topology.tree`). On reading, the
shape (depth, width, clients, lcp_only) must describe exactly the listed sites (names, kinds,
parents, in order); only the ports may differ from the defaults, e.g. edited by hand. Tiers
and each site's relay follow from the shape, so the file does not repeat them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redfl.topology.tree import RelayTree, TreeError, relay_tree

SITE_KEYS = ("name", "kind", "parent", "port")
HEADER_KEYS = ("project", "depth", "width", "clients", "lcp_only", "rp_port")


@dataclass(frozen=True)
class TreeFile:
    """What ``tree.json`` holds: the project name, the routing proxy's port and the tree."""

    project: str
    rp_port: int
    tree: RelayTree

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``tree.json``."""
        tree = self.tree
        return {
            "project": self.project,
            "depth": tree.depth,
            "width": tree.width,
            "clients": tree.clients,
            "lcp_only": tree.lcp_only,
            "rp_port": self.rp_port,
            "sites": [{k: getattr(s, k) for k in SITE_KEYS} for s in tree.sites],
        }


def save_tree(path: str | Path, tree_file: TreeFile) -> None:
    """Write ``tree_file`` as JSON to ``path`` (through a temporary file, then renamed)."""
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps(tree_file.to_json(), indent=1) + "\n", encoding="utf-8")
    os.replace(partial, target)


def _field(data: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in data:
        raise TreeError(f"{where}: missing key {key!r}")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TreeError(f"{where}: {key!r} must be {kind.__name__}, got {value!r}")
    return value


def parse_tree(data: object, source: str = "tree.json") -> TreeFile:
    """Check a decoded ``tree.json`` object and rebuild its :class:`TreeFile`.

    Raises
    ------
    TreeError
        Naming ``source``, the key or site at fault, and what was expected.
    """
    if not isinstance(data, dict):
        raise TreeError(f"{source}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - {*HEADER_KEYS, "sites"})
    if unknown:
        raise TreeError(f"{source}: unknown keys {unknown}")
    project = _field(data, "project", str, source)
    depth, width, clients = (_field(data, k, int, source) for k in ("depth", "width", "clients"))
    lcp_only = _field(data, "lcp_only", bool, source)
    rp_port = _field(data, "rp_port", int, source)
    if not 1 <= rp_port <= 65535:
        raise TreeError(f"{source}: rp_port {rp_port} is out of range 1..65535")
    listed = _field(data, "sites", list, source)
    try:
        expected = relay_tree(depth, width, clients, lcp_only)
    except TreeError as error:
        raise TreeError(f"{source}: {error}") from None
    if len(listed) != len(expected.sites):
        raise TreeError(
            f"{source}: depth {depth}, width {width}, clients {clients}, lcp_only "
            f"{lcp_only} make {len(expected.sites)} sites, but 'sites' lists {len(listed)}"
        )
    sites = []
    for i, (entry, site) in enumerate(zip(listed, expected.sites, strict=True)):
        where = f"{source}: sites[{i}]"
        if not isinstance(entry, dict) or set(entry) != set(SITE_KEYS):
            raise TreeError(f"{where}: expected an object with keys {list(SITE_KEYS)}")
        for key in ("name", "kind", "parent"):
            if entry[key] != getattr(site, key):
                raise TreeError(
                    f"{where}: {key} {entry[key]!r}, but the tree's shape makes it "
                    f"{getattr(site, key)!r}"
                )
        port = _field(entry, "port", int, where)
        sites.append(dataclasses.replace(site, port=port))
    try:
        tree = RelayTree(depth, width, clients, lcp_only, tuple(sites))
    except TreeError as error:  # ports: out of range or shared
        raise TreeError(f"{source}: {error}") from None
    return TreeFile(project, rp_port, tree)


def load_tree(path: str | Path) -> TreeFile:
    """Read ``tree.json`` (a file, or a folder that holds one).

    Raises
    ------
    TreeError
        If the file is missing, is not JSON, or does not describe a relay tree.
    """
    target = Path(path)
    if target.is_dir():
        target = target / "tree.json"
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TreeError(f"tree file not found: {target}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise TreeError(f"cannot read {target}: {error}") from None
    except json.JSONDecodeError as error:
        raise TreeError(f"{target}: not JSON: {error}") from None
    return parse_tree(data, str(target))
