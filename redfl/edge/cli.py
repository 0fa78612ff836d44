"""``redfl edge``: the routing proxy, the server, relays and LCPs of an edge job, the fleet's
device credentials, operators' stats, and the simulator.

Bad input exits with status 2 and one line ``redfl: error: ...`` on stderr.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer
from pydantic import ValidationError

from redfl.edge.jobs import JobSpec

__all__ = ["edge_app", "register"]

edge_app = typer.Typer(
    add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True, help=__doc__
)

Host = Annotated[str, typer.Option(help="Interface to bind.")]
Tree = Annotated[
    Path, typer.Option("--tree", help="Provisioning folder ('redfl tree'): credentials, maps.")
]


def _fail(message: str) -> NoReturn:
    typer.echo(f"redfl: error: {message}", err=True)
    raise typer.Exit(2)


def read_job(path: Path) -> JobSpec:
    """Read a job file (JSON object of :class:`JobSpec` fields); exit 2 when invalid."""
    try:
        return JobSpec.model_validate(json.loads(path.read_text()))
    except OSError as exc:
        _fail(f"--job {path}: {exc.strerror}")
    except json.JSONDecodeError as exc:
        _fail(f"--job {path}: not valid JSON: {exc}")
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        _fail(f"--job {path}: field {field} = {first.get('input')!r}: {first['msg']}")


def _check_member(tree: Path, name: str) -> None:
    """Exit 2 with the reason when ``tree`` holds no usable credential for ``name``."""
    from redfl.edge.provision import Member

    try:
        Member.load(tree, name)
    except ValueError as exc:
        _fail(str(exc))


def _https(url: str, option: str) -> str:
    """``url`` if it is an ``https://host:port`` URL; exit 2 naming ``option`` otherwise."""
    if not url.startswith("https://") or len(url) <= len("https://"):
        _fail(f"{option} must be an https://host:port URL (edge hops use TLS), got {url!r}")
    return url


@edge_app.command()
def proxy(
    tree: Tree,
    port: int = 8000,
    host: Host = "127.0.0.1",
    tls: Annotated[
        bool, typer.Option("--tls", help="TLS on the port with the tree's proxy certificate.")
    ] = False,
    tls_cert: Annotated[
        Path | None, typer.Option(help="TLS on the port with this certificate (PEM).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The private key of --tls-cert.")] = None,
) -> None:
    """Serve the routing proxy for the LCPs of TREE/lcp_map.json (plain HTTP unless --tls or
    --tls-cert/--tls-key)."""
    from redfl.edge.serve import proxy_tls, serve_proxy

    if (tls_cert is None) != (tls_key is None):
        _fail("--tls-cert and --tls-key go together")
    try:
        from redfl.edge.fleet import Fleet
        from redfl.edge.provision import Member, read_lcp_map

        read_lcp_map(tree)
        Fleet.of_tree(tree)
        context = proxy_tls(Member.load(tree, "proxy"), tls, tls_cert, tls_key)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    serve_proxy(tree, host, port, context)


@edge_app.command()
def server(
    tree: Tree,
    job: Annotated[Path, typer.Option(help="Job file (JSON).")],
    port: int = 8100,
    host: Host = "127.0.0.1",
) -> None:
    """Serve the edge server (global model, FedBuff, selection) of one job, for the LCPs
    and relays of TREE."""
    from redfl.edge.serve import serve_server

    spec = read_job(job)
    _check_member(tree, "server")
    serve_server(tree, spec, host, port)


@edge_app.command()
def lcp(
    tree: Tree,
    name: Annotated[str, typer.Option(help="LCP name, as in lcp_map.json.")],
    server: Annotated[str, typer.Option(help="Upstream URL: the server or the LCP's relay.")],
    port: int = 9000,
    host: Host = "127.0.0.1",
) -> None:
    """Serve one LCP."""
    from redfl.edge.serve import serve_lcp

    _check_member(tree, name)
    serve_lcp(tree, name, _https(server, "--server"), host, port)


@edge_app.command()
def relay(
    tree: Tree,
    name: Annotated[str, typer.Option(help="Relay name, as in tree.json.")],
    upstream: Annotated[str, typer.Option(help="URL of the parent relay or the server.")],
    port: int = 9000,
    host: Host = "127.0.0.1",
) -> None:
    """Serve one relay: it passes its subtree's syncs on to its upstream."""
    from redfl.edge.serve import serve_relay

    _check_member(tree, name)
    try:
        from redfl.topology.tree_file import load_tree

        site = load_tree(tree).tree.site(name)
    except ValueError as exc:
        _fail(str(exc))
    if site.kind != "relay":
        _fail(f"--name {name!r} is a {site.kind}, not a relay")
    serve_relay(tree, name, _https(upstream, "--upstream"), host, port)


@edge_app.command()
def up(
    tree: Tree,
    job: Annotated[Path, typer.Option(help="Job file (JSON).")],
    port: int = 8000,
    server_port: int = 8100,
    tls: Annotated[bool, typer.Option("--tls", help="TLS on the proxy's port.")] = False,
) -> None:
    """Start the server, every LCP of TREE/lcp_map.json and the proxy on this host."""
    from redfl.edge.launch import EdgeProcesses

    read_job(job)
    try:
        deployment = EdgeProcesses(tree, job, port, server_port, proxy_tls=tls)
    except ValueError as exc:
        _fail(str(exc))

    def stop_on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_term)  # stop the children on a plain `kill` too
    try:
        deployment.start()
        typer.echo(f"proxy on {deployment.proxy_url}; server on {deployment.server_url}")
        while all(p.poll() is None for p in deployment.procs.values()):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        deployment.stop()


@edge_app.command()
def stats(
    url: Annotated[str, typer.Argument(help="An edge service, e.g. https://HOST:PORT/stats.")],
    tree: Annotated[Path, typer.Option("--tree", help="Folder with the operator credential.")],
) -> None:
    """GET a service's /stats (or the server's /status) as the tree's operator; print it."""
    import httpx

    from redfl.edge.peers import operator_token
    from redfl.edge.provision import Member
    from redfl.edge.routes import OPERATOR_HEADER

    try:
        member = Member.load(tree, "operator")
    except ValueError as exc:
        _fail(str(exc))
    headers = {OPERATOR_HEADER: operator_token(member.bundle)}
    try:
        reply = httpx.get(url, headers=headers, verify=member.client_tls(), timeout=10.0)
    except httpx.HTTPError as exc:
        _fail(f"{url}: {exc}")
    if reply.status_code != 200:
        _fail(f"{url}: {reply.status_code} {reply.text[:200]}")
    typer.echo(json.dumps(reply.json(), indent=1))


@edge_app.command()
def simulate(
    proxy: Annotated[str, typer.Option(help="Routing proxy URL (http:// or https://).")],
    job: Annotated[str, typer.Option(help="Job name.")],
    devices: Annotated[int, typer.Option(min=1, help="Simulated devices.")] = 10_000,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at most.")] = 64,
    task: Annotated[str, typer.Option(help="digits or numeric.")] = "digits",
    enroll_secret: Annotated[
        str,
        typer.Option(
            envvar="REDFL_EDGE_ENROLL_SECRET", help="Enrolment credential (development mode)."
        ),
    ] = "",
    tokens: Annotated[
        Path | None,
        typer.Option(help="Tokens issued in advance ('devices issue --out'): no enrolment."),
    ] = None,
    tree: Annotated[
        Path | None, typer.Option(help="Read the development secret and the CA from here.")
    ] = None,
    ca: Annotated[
        Path | None, typer.Option(help="CA to trust for an https proxy (default: the tree's).")
    ] = None,
    seed: int = 0,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600.0,
) -> None:
    """Simulate devices against a proxy until the job is done; print a summary."""
    from redfl.edge.simulator import SimulatorConfig, print_summary, run_simulation

    if task not in ("digits", "numeric"):
        _fail(f"--task must be 'digits' or 'numeric', got {task!r}")
    scheme = proxy.split("://", 1)[0]
    if scheme not in ("http", "https") or len(proxy) <= len(scheme) + 3:
        _fail(f"--proxy must be an http(s)://host:port URL, got {proxy!r}")
    issued: dict[str, str] = {}
    if tokens is not None:
        issued = _read_tokens(tokens)
    elif tree is not None and not enroll_secret:
        from redfl.edge.provision import load_or_create_secrets

        try:
            enroll_secret = load_or_create_secrets(tree).enroll_secret
        except (ValueError, OSError) as exc:
            _fail(str(exc))
    if not issued and not enroll_secret:
        _fail("--tokens, or --enroll-secret (or REDFL_EDGE_ENROLL_SECRET, or --tree) is required")
    if ca is None and tree is not None:
        ca = tree / "trust" / "ca.pem"
    if scheme == "https" and ca is None:
        _fail("an https proxy needs --ca FILE or --tree DIR (the CA its certificate chains to)")
    if scheme == "https" and ca is not None and not ca.is_file():
        _fail(f"--ca {ca}: no such file")
    kind: Literal["digits", "numeric"] = "digits" if task == "digits" else "numeric"
    config = SimulatorConfig(
        proxy, job, devices, concurrency, kind, enroll_secret, seed, timeout,
        tokens=issued, ca=str(ca) if scheme == "https" and ca is not None else None,
    )  # fmt: skip
    summary = run_simulation(config, progress=sys.stderr.isatty())
    print_summary(summary)
    if not summary.done:
        raise typer.Exit(1)


def _read_tokens(path: Path) -> dict[str, str]:
    """The ``{device id: token}`` file ``devices issue`` writes; exit 2 when unusable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        _fail(f"--tokens {path}: {exc}")
    if (
        not isinstance(data, dict)
        or not data
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items())
    ):
        _fail(f"--tokens {path}: expected a JSON object of device id -> token")
    return data


devices_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="A fleet's device credentials: issue tokens in advance, revoke devices.",
)
edge_app.add_typer(devices_app, name="devices")


def _fleet(tree: Path) -> Any:
    from redfl.core.config import ConfigError
    from redfl.edge.fleet import Fleet

    try:
        return Fleet.of_tree(tree)
    except (ConfigError, ValueError, OSError) as exc:
        _fail(str(exc))


def _id_list(path: Path) -> list[str]:
    """Device ids, one a line (blank lines and ``#`` comments skipped); exit 2 when bad."""
    from pydantic import TypeAdapter

    from redfl.edge.protocol import DeviceId

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        _fail(f"--ids {path}: {exc.strerror}")
    ids = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    check = TypeAdapter(DeviceId)
    for device in ids:
        try:
            check.validate_python(device)
        except ValidationError:
            _fail(f"--ids {path}: {device!r} is not a device id (1-128 of A-Z a-z 0-9 _ . : @ -)")
    if not ids:
        _fail(f"--ids {path}: no device ids")
    return ids


@devices_app.command("issue")
def devices_issue(
    tree: Tree,
    out: Annotated[Path, typer.Option(help="Write {device id: token} here (mode 0600).")],
    ids: Annotated[Path | None, typer.Option(help="Device ids, one a line.")] = None,
    count: Annotated[
        int | None, typer.Option(min=1, max=10_000_000, help="Or this many ids: PREFIX00000...")
    ] = None,
    prefix: Annotated[str, typer.Option(help="Prefix of the --count ids.")] = "device-",
    days: Annotated[
        float | None, typer.Option(min=0.001, help="Token lifetime (edge.toml's issued_days).")
    ] = None,
) -> None:
    """Issue a token in advance to each device id and record the ids in the register; an id
    that already holds a credential is refused (revoke it first)."""
    import os

    if (ids is None) == (count is None):
        _fail("give exactly one of --ids FILE and --count N")
    if out.exists():
        _fail(f"--out {out} exists; refusing to overwrite tokens")
    names = _id_list(ids) if ids is not None else [f"{prefix}{i:05d}" for i in range(count or 0)]
    fleet = _fleet(tree)
    try:
        tokens = fleet.issue(names, days)
    except ValueError as exc:
        _fail(str(exc))
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(tokens, handle, indent=1)
    typer.echo(f"issued {len(tokens)} device tokens to {out}")


@devices_app.command("revoke")
def devices_revoke(
    tree: Tree,
    reason: Annotated[str, typer.Option(help="Why (kept in the register).")],
    device: Annotated[
        list[str] | None, typer.Option("--id", help="A device id (repeatable).")
    ] = None,
    ids: Annotated[Path | None, typer.Option(help="Device ids, one a line.")] = None,
) -> None:
    """Revoke devices: their tokens are refused from their next request on."""
    names = [*(device or []), *(_id_list(ids) if ids is not None else [])]
    if not names:
        _fail("give --id DEVICE (repeatable) or --ids FILE")
    try:
        revoked = _fleet(tree).revoke(names, reason)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"revoked {len(revoked)} devices")


def register(app: typer.Typer) -> None:
    """Add the ``edge`` command group to the ``redfl`` app."""
    app.add_typer(
        edge_app, name="edge", help="Edge devices: proxy, server, relays, LCPs, fleet, simulator."
    )


if __name__ == "__main__":
    edge_app()
