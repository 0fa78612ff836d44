"""``redfl tree``: analyse a relay tree, or write its provisioning folder.

The options are those of NVIDIA FLARE's ``tree_prov``: ``-d/--depth`` (1..5), ``-w/--width``
(2..9), ``-c/--clients`` (2..9 LCPs per leaf relay), ``-l/--lcp-only``, ``-a/--analyze``,
``-m/--max-sites`` (default 100), ``-r/--root-dir``, ``-p/--project-name``, ``--rp`` (the
routing proxy's port; the sites take the ports after it), ``--hosts HOSTS.toml`` (which
machine runs which subtree, :mod:`redfl.provision.hosts`) and ``--json``.

``--analyze`` prints three lines (or one JSON object with ``--json``) and writes nothing; it
works for any size and ignores ``--max-sites``. Otherwise the folder
``<root-dir>/<project-name>`` is written (see :mod:`redfl.provision.folder`), unless the tree
has more than ``--max-sites`` sites or the folder exists and is not empty; it then prints
one line (or, with ``--json``, one object: folder, files, rp_port and the counts). Bad input
exits 2 with one line ``redfl: error: ...``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer

from redfl.core.config import ConfigError
from redfl.provision.folder import FolderError, write_folder
from redfl.provision.hosts import load_hosts
from redfl.topology.tree import CLI_RANGES, TreeCounts, TreeRangeError, check_shape, relay_tree
from redfl.topology.tree import tree_counts as count_sites
from redfl.topology.tree_file import TreeFile

PROJECT_NAME = re.compile(r"^(?!\.+$)[A-Za-z0-9_.-]{1,64}$")
"""Project names: a folder name and a federation name (letters, digits, ``_.-``)."""

DEFAULT_RP_PORT = 9000


def register(app: typer.Typer) -> None:
    """Add the ``tree`` command to the ``redfl`` command line ``app``."""
    app.command("tree")(tree)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"redfl: error: {message}", err=True)
    return typer.Exit(2)


def analysis_lines(counts: TreeCounts) -> list[str]:
    """The three lines of ``redfl tree --analyze``."""
    c = counts
    return [
        f"Relays:  leaf={c.relays_leaf}; non-leaf={c.relays_nonleaf}; total={c.relays_total}",
        f"Clients: leaf={c.clients_leaf}; non-leaf={c.clients_nonleaf}; total={c.clients_total}",
        f"Total Sites: {c.total_sites}",
    ]


def _check_options(
    depth: int | None, width: int | None, clients: int | None, max_sites: int, rp: int, name: str
) -> tuple[int, int, int]:
    """The checked shape; raise the one-line exit for the first bad option."""
    for option, value in (("depth", depth), ("width", width), ("clients", clients)):
        if value is None:
            bounds = CLI_RANGES[option]
            raise _fail(f"--{option} is required (range {bounds.low}..{bounds.high})")
    assert depth is not None and width is not None and clients is not None
    try:
        check_shape(depth, width, clients, CLI_RANGES)
    except TreeRangeError as error:
        raise _fail(f"--{error.parameter} {error.value} is out of range {error.allowed}") from None
    if max_sites < 1:
        raise _fail(f"--max-sites {max_sites} is out of range 1 or more")
    if not 1 <= rp <= 65535:
        raise _fail(f"--rp {rp} is out of range 1..65535")
    if not PROJECT_NAME.match(name):
        raise _fail(
            f"--project-name {name!r} must be 1 to 64 letters, digits, '_', '.' or '-' "
            "(not only dots)"
        )
    return depth, width, clients


def tree(
    depth: Annotated[
        int | None, typer.Option("-d", "--depth", help="Relay tiers, 1..5.", show_default=False)
    ] = None,
    width: Annotated[
        int | None,
        typer.Option("-w", "--width", help="Child relays per relay, 2..9.", show_default=False),
    ] = None,
    clients: Annotated[
        int | None,
        typer.Option("-c", "--clients", help="LCPs per leaf relay, 2..9.", show_default=False),
    ] = None,
    lcp_only: Annotated[
        bool,
        typer.Option("-l", "--lcp-only", help="No aggregators: LCPs report to the server."),
    ] = False,
    analyze: Annotated[
        bool, typer.Option("-a", "--analyze", help="Only count the sites; write nothing.")
    ] = False,
    max_sites: Annotated[
        int, typer.Option("-m", "--max-sites", help="Refuse to write a bigger tree.")
    ] = 100,
    root_dir: Annotated[
        Path, typer.Option("-r", "--root-dir", help="Where the project folder goes.")
    ] = Path("."),
    project_name: Annotated[
        str, typer.Option("-p", "--project-name", help="The project (folder) name.")
    ] = "hierarchy",
    rp: Annotated[
        int, typer.Option("--rp", help="Routing proxy port; sites take the next ports.")
    ] = DEFAULT_RP_PORT,
    hosts: Annotated[
        Path | None,
        typer.Option("--hosts", help="HOSTS.toml: each host's address and the subtrees it runs."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Analyse a relay tree (-a), or write its provisioning folder: tree.json, hosts.json,
    lcp_map.json, hierarchy.toml, edge settings, credentials, Ray's token and a start script
    per host."""
    shape = _check_options(depth, width, clients, max_sites, rp, project_name)
    placed = None
    if hosts is not None and not analyze:
        try:
            placed = load_hosts(hosts)
        except ConfigError as error:
            raise _fail(str(error)) from None
    counts = count_sites(*shape, lcp_only=lcp_only)
    if analyze:
        if json_output:
            typer.echo(json.dumps(counts.as_dict()))
        else:
            typer.echo("\n".join(analysis_lines(counts)))
        return
    total = counts.total_sites
    if total > max_sites:
        raise _fail(f"the tree has {total} sites, over --max-sites {max_sites}; nothing written")
    if rp + total > 65535:
        raise _fail(f"--rp {rp}: the {total} sites need ports {rp + 1}..{rp + total}, over 65535")
    tree_file = TreeFile(project_name, rp, relay_tree(*shape, lcp_only, base_port=rp + 1))
    target = root_dir / project_name
    try:
        files = write_folder(target, tree_file, placed)
    except ConfigError as error:
        raise _fail(f"--hosts {hosts}: {error}") from None
    except FolderError as error:
        raise _fail(str(error)) from None
    if json_output:
        summary = {"folder": str(target), "files": files, "rp_port": rp, **counts.as_dict()}
        typer.echo(json.dumps(summary))
        return
    typer.echo(
        f"wrote {target}: {total} sites ({counts.relays_total} relays, "
        f"{counts.clients_nonleaf} aggregators, {counts.clients_leaf} LCPs); "
        f"routing proxy port {rp}"
    )
