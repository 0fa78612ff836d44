"""The provisioning folder ``redfl tree`` writes for a relay tree: a deployment kit. No Ray.

``<root-dir>/<project-name>/`` holds:

- ``tree.json``: every site (name, kind, parent, port) and the shape
  (:mod:`redfl.topology.tree_file`);
- ``hosts.json``: which host runs each site, each host's address, pinned sites and Ray ports
  (from ``--hosts HOSTS.toml``, :mod:`redfl.provision.hosts`; without it one host,
  ``local``, at 127.0.0.1);
- ``lcp_map.json``: ``{"<lcp>": {"host": <its host's address>, "port": <int>}}`` in site
  order, what the routing proxy reads to reach the LCPs;
- ``hierarchy.toml``: a ``redfl run`` config for a hierarchical federation on this tree
  (digits softmax clients, FedAvg, :data:`CLIENTS_PER_LCP` clients under every LCP), with
  the sites ``HOSTS.toml`` lists pinned to their hosts;
- ``edge.toml`` (the edge deployment's settings: device enrolment, tokens issued in advance
  by default) and ``edge_job.json`` (the edge server's job: digits, FedBuff);
- ``trust/`` and ``credentials/``: the tree's CA and a credential for the server, the
  routing proxy, every relay and LCP (for the address of its host) and an operator
  (:mod:`redfl.trust.layout`): every hop of the edge deployment is mutual TLS;
- ``ray_token``: the Ray cluster's authentication token (mode 0600; Ray as ``pip`` installs
  it requires token authentication);
- ``scripts/``: ``env.sh`` (sourced by the others: the interpreter ``redfl tree`` ran with,
  ``REDFL_PYTHON`` to override it, Ray's token and the head's address), ``start_<host>.sh``
  for every host (its Ray node, with the head's Ray, edge server and routing proxy on the
  head, and the relays and LCPs it runs; ``start_<host>.sh ray`` starts one part; it stays
  in the foreground and stops what it started on SIGTERM or Ctrl-C) and
  ``run_hierarchy.sh`` (runs ``hierarchy.toml`` on the cluster);
- ``README.md``: these lines, for whoever opens the folder.

The folder is first written beside the target under a hidden temporary name, then renamed
into place: it appears whole or not at all, and an existing non-empty folder is never
touched (:func:`write_folder` refuses it).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from redfl.provision.hosts import RAY_PORTS, HostsConfig, Placement, local_hosts, place
from redfl.topology.tree import site_resource
from redfl.topology.tree_file import TreeFile, save_tree
from redfl.trust.files import PRIVATE, write_atomic
from redfl.trust.identity import Kind
from redfl.trust.layout import provision_members

__all__ = [
    "CLIENTS_PER_LCP",
    "FIXED_FILES",
    "FolderError",
    "hierarchy_toml",
    "lcp_map",
    "scripts",
    "write_folder",
]

CLIENTS_PER_LCP = 5
"""Clients under every LCP in the written ``hierarchy.toml``."""

FIXED_FILES = (
    "README.md",
    "edge.toml",
    "edge_job.json",
    "hierarchy.toml",
    "hosts.json",
    "lcp_map.json",
    "ray_token",
    "scripts/env.sh",
    "scripts/run_hierarchy.sh",
    "tree.json",
)
"""The files of every provisioning folder besides ``start_<host>.sh`` per host and the trust
files (``trust/``, ``credentials/``), relative to it, sorted."""

OPERATOR = "operator"
"""The member name of the operator credential written to ``credentials/``."""
PARTS = ("ray", "server", "relays", "lcps", "proxy")
"""What a host's start script can start, in the order it starts them."""


class FolderError(ValueError):
    """The provisioning folder cannot be written; the message names it."""


def lcp_map(placement: Placement) -> dict[str, dict[str, str | int]]:
    """LCP name -> ``{"host", "port"}``, in site order (the content of ``lcp_map.json``)."""
    tree = placement.tree
    return {s.name: {"host": placement.address(s.name), "port": s.port} for s in tree.lcps}


def hierarchy_toml(
    tree_file: TreeFile, pins: tuple[str, ...] = (), clients_per_lcp: int = CLIENTS_PER_LCP
) -> str:
    """The ``hierarchy.toml`` text: a hierarchical digits federation on this tree, with
    ``pins`` (the sites ``HOSTS.toml`` lists) pinned to their hosts."""
    tree = tree_file.tree
    lcps = len(tree.lcps)
    pin = f"pin = {json.dumps(list(pins))}  # subtrees on their hosts (HOSTS.toml)\n"
    pin = pin if pins else ""
    return f"""\
# A hierarchical federation on the relay tree of tree.json (written by `redfl tree`):
# {clients_per_lcp} digits clients under each of the {lcps} LCPs; every LCP folds its clients
# into one sample-weighted partial sum, every aggregator folds its children's, the server
# applies the strategy. Run it with `redfl run hierarchy.toml` (this machine) or
# scripts/run_hierarchy.sh (the cluster the start scripts make).

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
{pin}
[resources]
split = "uniform"        # uniform | explicit | adaptive
worker = {{ CPU = 1 }}   # one worker per CPU left beside the pinned subtrees' workers
placement_strategy = "PACK"
"""


EDGE_TOML = """\
# The edge deployment's settings (read by `redfl edge proxy`).

[enrollment]
# issued: tokens issued in advance per device id (redfl edge devices issue --tree DIR
#         (--ids FILE | --count N) --out FILE); /enroll is closed
# verifier: the operator's function approves each enrolment:
#         enroll_verifier = "my_fleet:approve"   # approve(device_id, credential) -> bool
# shared-secret: anyone with edge_secrets.json's secret enrols as any id (development only)
mode = "issued"
issued_days = 365        # lifetime of a token issued in advance
token_hours = 24         # lifetime of a token from /enroll
"""

EDGE_JOB = {
    "name": "edge-job",
    "task": "digits",
    "num_updates_for_model": 50,
    "max_model_version": 20,
    "device_selection_size": 50,
    "max_samples_per_update": 1000,
}
"""The edge server's job in ``edge_job.json`` (:class:`redfl.edge.jobs.JobSpec` fields)."""


def hosts_json(placement: Placement) -> dict[str, object]:
    """The content of ``hosts.json``: the head, the Ray port and, per host, its address, its
    sites by kind, its pinned sites and its Ray settings."""
    hosts = placement.hosts
    out: dict[str, object] = {"head": hosts.head, "ray_port": hosts.ray_port}
    out["hosts"] = {
        name: {
            "address": host.address,
            "head": host.head,
            "pins": list(placement.pins[name]),
            "sites": [s for s, h in placement.site_host.items() if h == name],
            "cpus": host.cpus,
            "ray_ports": host.ray_ports,
        }
        for name, host in hosts.hosts.items()
    }
    return out


_ENV = """\
#!/usr/bin/env bash
# Sourced by the other scripts (written by `redfl tree`): the interpreter, Ray's
# authentication token and the Ray head's address. Each script finds the folder from its own
# path; set REDFL_PYTHON where the interpreter lies elsewhere on a host.
DIR="$(cd "$(dirname "${{BASH_SOURCE[0]}}")/.." && pwd)"
PY="${{REDFL_PYTHON:-{python}}}"
if [ ! -x "$PY" ]; then
  echo "$(basename "$0"): no Python interpreter at $PY (set REDFL_PYTHON)" >&2
  exit 2
fi
# Ray requires token authentication: every node and driver of the cluster shares this token
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH="$DIR/ray_token"
export RAY_USAGE_STATS_ENABLED="${{RAY_USAGE_STATS_ENABLED:-0}}"
HEAD={head}
"""

_RUN = """\
#!/usr/bin/env bash
# Run the hierarchical federation of hierarchy.toml on the cluster the start scripts made
# (written by `redfl tree`). Usage: run_hierarchy.sh [redfl run options, e.g. --rounds 5]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec "$PY" -m redfl.cli run "$DIR/hierarchy.toml" --address "$HEAD" "$@"
"""

_START = """\
#!/usr/bin/env bash
# Start what host {host} ({address}) runs: {summary}.
# Usage: start_{host}.sh [PART ...]   PART: {parts} (default: all of them).
# Written by `redfl tree`. It stays in the foreground; SIGTERM or Ctrl-C stops every process
# it started, and it stops them all when one of them ends. Each process writes its output to
# logs/<name>.log in the folder. Ray comes first: the rest starts once its node is up.{head_note}
set -uo pipefail
source "$(dirname "${{BASH_SOURCE[0]}}")/env.sh"
NAME="start_{host}.sh"
LOGS="$DIR/logs"
mkdir -p "$LOGS"
PARTS=("$@")
[ ${{#PARTS[@]}} -eq 0 ] && PARTS=({parts})
for part in "${{PARTS[@]}}"; do
  case " {parts} " in
    *" $part "*) ;;
    *) echo "$NAME: unknown part '$part' (this host runs: {parts})" >&2; exit 2 ;;
  esac
done
want() {{
  local part
  for part in "${{PARTS[@]}}"; do [ "$part" = "$1" ] && return 0; done
  return 1
}}
PIDS=()
run() {{  # run LOG COMMAND...: in the background, its output in logs/LOG.log
  local log="$LOGS/$1.log"
  shift
  "$@" >"$log" 2>&1 &
  PIDS+=($!)
  echo "$NAME: started $(basename "$log" .log) (pid $!, log $log)" >&2
}}
stop() {{ trap - TERM INT; kill -TERM "${{PIDS[@]}}" 2>/dev/null; wait; }}
trap 'stop; exit 0' TERM INT
ray_up() {{  # wait until `ray start` says the node is up (it may take a while on a busy host)
  local log="$LOGS/ray-{host}.log" pid="${{PIDS[-1]}}" tries
  for tries in $(seq 1 600); do
    grep -q "Ray runtime started" "$log" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  echo "$NAME: the Ray node did not start (see $log)" >&2
  stop
  exit 1
}}
EDGE=("$PY" -m redfl.edge.cli)
{body}
wait -n
code=$?
echo "$NAME: a process ended (exit $code); stopping the others" >&2
stop
exit 1
"""


def _ray_command(placement: Placement, host: str) -> list[str]:
    """The ``ray start`` arguments of ``host``'s node (after ``"$PY" -m ray.scripts.scripts``)."""
    hosts = placement.hosts
    config = hosts.hosts[host]
    head = hosts.hosts[hosts.head]
    args = ["start", "--block", "--disable-usage-stats", "--node-ip-address", config.address]
    if config.head:
        args += ["--head", "--port", str(hosts.ray_port), "--include-dashboard", "false"]
    else:
        args += ["--address", f"{head.address}:{hosts.ray_port}"]
    resources = {site_resource(site): 1 for site in placement.pins[host]}
    if resources:
        args += ["--resources", json.dumps(resources, separators=(",", ":"))]
    if config.cpus is not None:
        args += ["--num-cpus", str(config.cpus)]
    if config.object_store_mb is not None:
        args += ["--object-store-memory", str(config.object_store_mb * 2**20)]
    if config.ray_ports is not None:
        base = config.ray_ports
        ports = [
            ("--node-manager-port", 0),
            ("--object-manager-port", 1),
            ("--dashboard-agent-listen-port", 2),
            ("--dashboard-agent-grpc-port", 3),
            ("--metrics-export-port", 4),
            ("--runtime-env-agent-port", 5),
            ("--min-worker-port", 10),
            ("--max-worker-port", RAY_PORTS - 1),
        ]
        if config.head:
            ports += [("--ray-client-server-port", 6), ("--dashboard-port", 7)]
        for option, offset in ports:
            args += [option, str(base + offset)]
    return args


def _line(*words: str) -> str:
    """One shell command line: ``$``-words as they are, the others quoted."""
    return " ".join(w if w.startswith(('"$', "${")) else shlex.quote(w) for w in words)


def scripts(tree_file: TreeFile, placement: Placement, python: str) -> dict[str, str]:
    """The scripts, by file name (``python``: the interpreter they run)."""
    hosts = placement.hosts
    tree = tree_file.tree
    head = hosts.hosts[hosts.head]
    out = {
        "env.sh": _ENV.format(
            python=python.replace('"', ""), head=shlex.quote(f"{head.address}:{hosts.ray_port}")
        ),
        "run_hierarchy.sh": _RUN,
    }

    def url(site: str) -> str:
        return f"https://{placement.address(site)}:{tree.site(site).port}"

    for name, config in hosts.hosts.items():
        address = config.address
        blocks: dict[str, list[str]] = {part: [] for part in PARTS}
        ray = _line('"$PY"', "-m", "ray.scripts.scripts", *_ray_command(placement, name))
        blocks["ray"] += [f"  run ray-{name} {ray}", "  ray_up"]
        if config.head:
            server = tree.site("server")
            blocks["server"].append(
                "  run server "
                + _line('"${EDGE[@]}"', "server", "--tree", '"$DIR"', "--job")
                + ' "$DIR/edge_job.json" '
                + _line("--host", address, "--port", str(server.port))
            )
            blocks["proxy"].append(
                "  run proxy "
                + _line('"${EDGE[@]}"', "proxy", "--tree", '"$DIR"', "--tls")
                + " "
                + _line("--host", address, "--port", str(tree_file.rp_port))
            )
        for relay in placement.on(name, "relay"):
            parent = tree.site(relay).parent or "server"
            blocks["relays"].append(
                f"  run {relay} "
                + _line('"${EDGE[@]}"', "relay", "--tree", '"$DIR"', "--name", relay)
                + " "
                + _line("--upstream", url(parent), "--host", address)
                + " "
                + _line("--port", str(tree.site(relay).port))
            )
        for lcp in placement.on(name, "lcp"):
            site = tree.site(lcp)
            upstream = url(site.relay) if site.relay is not None else url("server")
            blocks["lcps"].append(
                f"  run {lcp} "
                + _line('"${EDGE[@]}"', "lcp", "--tree", '"$DIR"', "--name", lcp)
                + " "
                + _line("--server", upstream, "--host", address, "--port", str(site.port))
            )
        parts = [part for part in PARTS if blocks[part]]
        body = "\n".join(
            f"if want {part}; then\n" + "\n".join(blocks[part]) + "\nfi" for part in parts
        )
        counts = [
            "its Ray node" if not config.head else "the Ray head, the edge server, the proxy",
            f"{len(blocks['relays'])} relays",
            f"{len(blocks['lcps'])} LCPs",
        ]
        note = (
            "\n# Start the head host first: the other hosts' Ray nodes join it."
            if config.head
            else f"\n# The head ({hosts.head}) must be up: this host's Ray node joins it."
        )
        out[f"start_{name}.sh"] = _START.format(
            host=name,
            address=address,
            summary=", ".join(counts),
            parts=" ".join(parts),
            body=body,
            head_note=note,
        )
    return out


def readme(tree_file: TreeFile, placement: Placement) -> str:
    """The folder's ``README.md``: what each file is and how to start the deployment."""
    counts = tree_file.tree.counts()
    hosts = placement.hosts
    head = hosts.head
    others = [name for name in hosts.hosts if name != head]
    starts = ", then ".join(f"`scripts/start_{n}.sh` on {n}" for n in [head, *others])
    return f"""\
# {tree_file.project}: a redfl relay tree

depth {tree_file.tree.depth}, width {tree_file.tree.width}, {tree_file.tree.clients} LCPs per \
leaf relay{" (LCPs only)" if tree_file.tree.lcp_only else ""}: {counts.relays_total} relays, \
{counts.clients_nonleaf} aggregators, {counts.clients_leaf} LCPs, {counts.total_sites} sites, \
on {len(hosts.hosts)} host(s) (head: {head}).

- `tree.json`: every site (name, kind, parent, port); `hosts.json`: which host runs what.
- `lcp_map.json`: LCP -> host and port, read by the routing proxy.
- `hierarchy.toml`: `scripts/run_hierarchy.sh` runs a hierarchical federation on this tree
  on the cluster (`redfl run hierarchy.toml` on one machine).
- `edge.toml`, `edge_job.json`: device enrolment and the edge server's job.
- `trust/`: the tree's CA, register and CRL; `credentials/`: one bundle per member (0600).
  `trust/ca.key` is needed only where credentials are issued or revoked.
- `ray_token`: the Ray cluster's token (0600).
- `scripts/`: {starts} (each starts that host's part of the deployment: Ray, and the edge
  server, relays, LCPs and routing proxy it runs; port {tree_file.rp_port} is the proxy's);
  `run_hierarchy.sh` runs `hierarchy.toml`.

Copy this folder to every host (the same path is simplest; set `REDFL_PYTHON` where the
interpreter lies elsewhere).
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


def members(placement: Placement) -> list[tuple[str, Kind, list[str]]]:
    """The credentials besides the server's: the proxy, every relay and LCP (for its host's
    address) and the operator."""
    tree = placement.tree
    head = placement.hosts.hosts[placement.hosts.head].address
    out: list[tuple[str, Kind, list[str]]] = [("proxy", "proxy", [head])]
    out += [(s.name, "relay", [placement.address(s.name)]) for s in tree.of_kind("relay")]
    out += [(s.name, "lcp", [placement.address(s.name)]) for s in tree.lcps]
    out.append((OPERATOR, "operator", []))
    return out


def write_folder(
    target: Path,
    tree_file: TreeFile,
    hosts: HostsConfig | None = None,
    python: str | None = None,
) -> list[str]:
    """Write the provisioning folder for ``tree_file`` at ``target``, whole or not at all.

    Parameters
    ----------
    target : Path
        The folder to write.
    tree_file : TreeFile
        The tree.
    hosts : HostsConfig | None
        Which host runs what (``HOSTS.toml``); None: everything on 127.0.0.1.
    python : str | None
        The interpreter the scripts run (default: this one).

    Returns
    -------
    list of str
        The files written, relative to ``target``, sorted.

    Raises
    ------
    FolderError
        If ``target`` exists and is not an empty folder, or cannot be written.
    ConfigError
        If ``hosts`` lists a site that cannot be placed (naming the host and the site).
    """
    check_target(target)
    placement = place(tree_file.tree, hosts or local_hosts())
    pins = placement.pinned if hosts is not None else ()
    interpreter = python or sys.executable
    head = placement.hosts.hosts[placement.hosts.head].address
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as error:
        raise FolderError(f"cannot write {target}: {error}") from None
    try:
        save_tree(staging / "tree.json", tree_file)
        texts = {
            "lcp_map.json": json.dumps(lcp_map(placement), indent=1) + "\n",
            "hosts.json": json.dumps(hosts_json(placement), indent=1) + "\n",
            "hierarchy.toml": hierarchy_toml(tree_file, pins),
            "edge.toml": EDGE_TOML,
            "edge_job.json": json.dumps(EDGE_JOB, indent=1) + "\n",
            "README.md": readme(tree_file, placement),
        }
        for name, text in texts.items():
            (staging / name).write_text(text, encoding="utf-8")
        write_atomic(staging / "ray_token", secrets.token_hex(32).encode(), PRIVATE)
        names = list(dict.fromkeys([head, "127.0.0.1", "localhost"]))
        provision_members(staging, members(placement), names)
        (staging / "scripts").mkdir()
        for name, text in scripts(tree_file, placement, interpreter).items():
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
