"""The provisioning folder ``redfl tree`` writes for a relay tree. No Ray.

``<root-dir>/<project-name>/`` holds:

- ``tree.json``: every site (name, kind, parent, port) and the shape
  (:mod:`redfl.topology.tree_file`);
- ``lcp_map.json``: ``{"<lcp>": {"host": "127.0.0.1", "port": <int>}}`` in site order, what
  the routing proxy reads to reach the LCPs;
- ``hierarchy.toml``: a ``redfl run`` config for a hierarchical federation on this tree
  (digits softmax clients, FedAvg, :data:`CLIENTS_PER_LCP` clients under every LCP);
- ``scripts/``: ``start_server.sh`` (runs the federation), ``start_rp.sh`` (the routing
  proxy on the ``--rp`` port) and ``start_site.sh SITE RAY_ADDRESS`` (joins a machine to the
  Ray cluster advertising the custom resource :func:`~redfl.topology.tree.site_resource`, so
  that a site's subtree can be pinned to it); each locates the folder from its own path;
- ``README.md``: these lines, for whoever opens the folder.

Prototyping on one machine, as NVIDIA FLARE's tool: every host is ``127.0.0.1``. On Ray,
aggregators and LCPs are nodes hosted by workers, not processes, so no site needs a start
script of its own unless its subtree is pinned to a machine.

The folder is first written beside the target under a hidden temporary name, then renamed
into place: it appears whole or not at all, and an existing non-empty folder is never
touched (:func:`write_folder` refuses it).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from redfl.topology.tree import site_resource
from redfl.topology.tree_file import TreeFile, save_tree

CLIENTS_PER_LCP = 5
"""Clients under every LCP in the written ``hierarchy.toml``."""

LOCALHOST = "127.0.0.1"

FILES = (
    "README.md",
    "hierarchy.toml",
    "lcp_map.json",
    "scripts/start_rp.sh",
    "scripts/start_server.sh",
    "scripts/start_site.sh",
    "tree.json",
)
"""Every file of a provisioning folder, relative to it, sorted."""


class FolderError(ValueError):
    """The provisioning folder cannot be written; the message names it."""


def lcp_map(tree_file: TreeFile) -> dict[str, dict[str, str | int]]:
    """LCP name -> ``{"host", "port"}``, in site order (the content of ``lcp_map.json``)."""
    return {s.name: {"host": LOCALHOST, "port": s.port} for s in tree_file.tree.lcps}


def hierarchy_toml(tree_file: TreeFile, clients_per_lcp: int = CLIENTS_PER_LCP) -> str:
    """The ``hierarchy.toml`` text: a hierarchical digits federation on this tree."""
    tree = tree_file.tree
    lcps = len(tree.lcps)
    return f"""\
# A hierarchical federation on the relay tree of tree.json (written by `redfl tree`):
# {clients_per_lcp} digits clients under each of the {lcps} LCPs; every LCP folds its clients
# into one sample-weighted partial sum, every aggregator folds its children's, the server
# applies the strategy. Run it with `redfl run hierarchy.toml` or scripts/start_server.sh.

[federation]
name = {json.dumps(tree_file.project)}
rounds = 20
seed = 0
runtime = "ray"          # "ray" (embedded instance, or --address) or "local" (in-process)

[client]
target = "redfl.examples.digits:DigitsClient"
num_clients = {clients_per_lcp * lcps}
roles = "train-eval"

[client.options]
partition = "iid"        # iid | dirichlet | shard (see examples/digits_fedavg.toml)
tile = 4                 # the digits tiled 4 times, so that many clients each get enough
test_fraction = 0.2      # held out on the server for central evaluation
lr = 0.3
epochs = 5
batch_size = 8

[strategy]
name = "fedavg"
fraction_fit = 1.0
fraction_evaluate = 0.0

[evaluation]
central = "redfl.examples.digits:central_evaluation"

[topology]
schema = "hierarchical"
tree_file = "tree.json"  # read beside this file
clients_per_lcp = {clients_per_lcp}

[resources]
split = "uniform"        # uniform | explicit | adaptive
worker = {{ CPU = 1 }}   # one worker per available CPU by default
placement_strategy = "PACK"
"""


_HEAD = """\
#!/usr/bin/env bash
# {what}
# Written by `redfl tree`; it finds its provisioning folder from its own path.
set -euo pipefail
DIR="$(cd "$(dirname "${{BASH_SOURCE[0]}}")/.." && pwd)"
"""


def scripts(tree_file: TreeFile) -> dict[str, str]:
    """The start scripts, by file name."""
    prefix = site_resource("")
    return {
        "start_server.sh": _HEAD.format(
            what="Run the hierarchical federation of this folder. Usage: start_server.sh "
            "[redfl run options, e.g. --address auto --rounds 5]"
        )
        + 'exec redfl run "$DIR/hierarchy.toml" "$@"\n',
        "start_rp.sh": _HEAD.format(
            what="Start the routing proxy: edge devices reach the LCPs of lcp_map.json "
            f"through it, on port {tree_file.rp_port}."
        )
        + f'exec redfl edge proxy --tree "$DIR" --port {tree_file.rp_port} "$@"\n',
        "start_site.sh": _HEAD.format(
            what="Join this machine to the run's Ray cluster as the host of one site's "
            "subtree. Usage: start_site.sh SITE RAY_ADDRESS"
        )
        + f"""\
if [ "$#" -ne 2 ]; then
  echo "usage: $0 SITE RAY_ADDRESS (SITE: a site name of $DIR/tree.json)" >&2
  exit 2
fi
if ! grep -Fq "\\"name\\": \\"$1\\"," "$DIR/tree.json"; then
  echo "start_site.sh: no site '$1' in $DIR/tree.json" >&2
  exit 2
fi
exec ray start --address "$2" --resources "{{\\"{prefix}$1\\": 1}}"
""",
    }


def readme(tree_file: TreeFile) -> str:
    """The folder's ``README.md``: what each file is."""
    counts = tree_file.tree.counts()
    return f"""\
# {tree_file.project}: a redfl relay tree

depth {tree_file.tree.depth}, width {tree_file.tree.width}, {tree_file.tree.clients} LCPs per \
leaf relay{" (LCPs only)" if tree_file.tree.lcp_only else ""}: {counts.relays_total} relays, \
{counts.clients_nonleaf} aggregators, {counts.clients_leaf} LCPs, {counts.total_sites} sites.

- `tree.json`: every site (name, kind, parent, port).
- `lcp_map.json`: LCP -> host and port, read by the routing proxy.
- `hierarchy.toml`: `redfl run hierarchy.toml` runs a hierarchical federation on this tree.
- `scripts/start_server.sh`: runs it; `scripts/start_rp.sh`: the routing proxy on port \
{tree_file.rp_port}; `scripts/start_site.sh SITE RAY_ADDRESS`: joins a machine to the Ray \
cluster as the host of SITE's subtree.
"""


def check_target(target: Path) -> None:
    """Refuse a target that exists and is not an empty folder (nothing is ever overwritten).

    Raises
    ------
    FolderError
        Naming the target.
    """
    if target.is_dir():
        if any(target.iterdir()):
            raise FolderError(f"{target} exists and is not empty; refusing to write into it")
    elif target.exists() or target.is_symlink():
        raise FolderError(f"{target} exists and is not a folder")


def write_folder(target: Path, tree_file: TreeFile) -> list[str]:
    """Write the provisioning folder for ``tree_file`` at ``target``, whole or not at all.

    Returns
    -------
    list of str
        The files written, relative to ``target`` (:data:`FILES`).

    Raises
    ------
    FolderError
        If ``target`` exists and is not an empty folder, or cannot be written.
    """
    check_target(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as error:
        raise FolderError(f"cannot write {target}: {error}") from None
    try:
        save_tree(staging / "tree.json", tree_file)
        (staging / "lcp_map.json").write_text(
            json.dumps(lcp_map(tree_file), indent=1) + "\n", encoding="utf-8"
        )
        (staging / "hierarchy.toml").write_text(hierarchy_toml(tree_file), encoding="utf-8")
        (staging / "README.md").write_text(readme(tree_file), encoding="utf-8")
        (staging / "scripts").mkdir()
        for name, text in scripts(tree_file).items():
            path = staging / "scripts" / name
            path.write_text(text, encoding="utf-8")
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        staging.chmod(0o755)
        check_target(target)  # still absent or empty
        os.replace(staging, target)  # replaces an empty folder only
    except OSError as error:
        raise FolderError(f"cannot write {target}: {error}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
