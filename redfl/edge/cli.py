"""``redfl edge``: the routing proxy, the server, relays and LCPs of a standing edge deployment
(``up`` starts and supervises them), its jobs (submit, list, abort), the fleet's device
credentials, operators' stats, one real device, and the simulator.

Bad input exits with status 2 and one line ``redfl: error: ...`` on stderr.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

if TYPE_CHECKING:
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


def read_job(path: Path, option: str = "--job") -> tuple[JobSpec, dict[str, Any] | None]:
    """Read a job file (a JSON object of :class:`redfl.edge.jobs.JobSpec` fields) and its
    initial model file, if it names one; exit 2 naming the field when invalid."""
    from redfl.core.config import ConfigError
    from redfl.edge.jobs import read_job_file

    try:
        return read_job_file(path)
    except ConfigError as exc:
        _fail(f"{option} {exc}")


def _read_options(path: Path | None) -> dict[str, Any]:
    """A device's own options: a JSON or TOML object (by the file's suffix); exit 2 when
    unusable."""
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            import tomllib

            data: object = tomllib.loads(text)
        else:
            data = json.loads(text)
    except OSError as exc:
        _fail(f"--options {path}: {exc.strerror or exc}")
    except ValueError as exc:  # JSON and TOML decode errors are ValueErrors
        _fail(f"--options {path}: {exc}")
    if not isinstance(data, dict):
        _fail(f"--options {path}: expected an object of option names to values")
    return data


Server = Annotated[str, typer.Option("--server", help="The edge server, https://HOST:PORT.")]
AllowImport = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-import",
        help="A module prefix a submitted job may import (repeatable; default: any).",
    ),
]


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
    jobs: Annotated[
        Path | None, typer.Option(help="The jobs' run folders (default TREE/jobs).")
    ] = None,
    job: Annotated[
        Path | None,
        typer.Option(help="A job file to submit at start, unless a job of its name exists."),
    ] = None,
    port: int = 8100,
    host: Host = "127.0.0.1",
    allow_import: AllowImport = None,
    fsync: Annotated[
        bool, typer.Option("--fsync", help="Sync each journal line to disk (slower).")
    ] = False,
) -> None:
    """Serve the edge server: the jobs of a standing deployment (global models, FedBuff,
    selection), for the LCPs and relays of TREE. Jobs that had not ended are taken back."""
    from redfl.core.config import ConfigError
    from redfl.edge.serve import serve_server
    from redfl.edge.server import EdgeServer

    first = read_job(job) if job is not None else None
    _check_member(tree, "server")
    try:
        edge = EdgeServer(jobs or tree / "jobs", allowed_prefixes=allow_import, fsync=fsync)
    except OSError as exc:
        _fail(f"--jobs {jobs or tree / 'jobs'}: {exc}")
    for job_id in edge.resumed:
        typer.echo(f"redfl edge server: took back job {job_id}", err=True)
    if first is not None:
        spec, model = first
        known = [s for s in edge.listing() if s["name"] == spec.name]
        if known:
            typer.echo(
                f"redfl edge server: a job named {spec.name!r} exists ({known[-1]['job_id']}, "
                f"{known[-1]['status']}): --job not submitted again",
                err=True,
            )
        else:
            try:
                started = edge.submit(spec, model)
            except ConfigError as exc:
                _fail(f"--job {job}: {exc}")
            typer.echo(f"redfl edge server: job {started.job_id} submitted", err=True)
    serve_server(tree, edge, host, port)


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
    job: Annotated[
        Path | None, typer.Option(help="A job file the server submits at its first start.")
    ] = None,
    port: int = 8000,
    server_port: int = 8100,
    tls: Annotated[bool, typer.Option("--tls", help="TLS on the proxy's port.")] = False,
    jobs: Annotated[
        Path | None, typer.Option(help="The server's jobs folder (default TREE/jobs).")
    ] = None,
    relays: Annotated[
        bool,
        typer.Option(
            "--relays", help="Start the tree's relays; LCPs sync through them (else directly)."
        ),
    ] = False,
    max_restarts: Annotated[
        int, typer.Option(min=0, help="Restarts of one process allowed within a minute.")
    ] = 5,
    allow_import: AllowImport = None,
) -> None:
    """Start the server, every LCP of TREE/lcp_map.json (and, with --relays, the tree's
    relays) and the proxy on this host, and keep them up: a process that dies is restarted
    (with backoff; each restart logged), one that keeps dying is left down, and the rest
    keeps running. Ctrl-C or SIGTERM stops them all."""
    from redfl.edge.launch import EdgeProcesses
    from redfl.edge.supervisor import Supervisor

    if job is not None:
        read_job(job)
    extra = [a for prefix in allow_import or [] for a in ("--allow-import", prefix)]
    try:
        deployment = EdgeProcesses(
            tree,
            job,
            port,
            server_port,
            proxy_tls=tls,
            jobs_dir=jobs,
            relays=relays,
            supervisor=Supervisor(max_restarts=max_restarts),
            server_args=extra,
        )
    except ValueError as exc:
        _fail(str(exc))

    def stop_on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_term)  # stop the children on a plain `kill` too
    try:
        deployment.start(watch=False)  # supervised from this thread
        for name, pid in sorted((n, p.pid) for n, p in deployment.procs.items()):
            typer.echo(f"redfl edge up: {name} pid {pid}", err=True)
        typer.echo(f"proxy on {deployment.proxy_url}; server on {deployment.server_url}")
        while True:
            deployment.supervisor.poll()
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        _fail(str(exc))
    finally:
        deployment.stop()


def _operator(tree: Path) -> Any:
    from redfl.edge.control import Operator

    try:
        return Operator.of_tree(tree)
    except ValueError as exc:
        _fail(str(exc))


@edge_app.command()
def stats(
    url: Annotated[str, typer.Argument(help="An edge service, e.g. https://HOST:PORT/stats.")],
    tree: Annotated[Path, typer.Option("--tree", help="Folder with the operator credential.")],
) -> None:
    """GET a service's /stats (or the server's /status) as the tree's operator; print it."""
    from redfl.edge.control import ControlError

    try:
        typer.echo(json.dumps(_operator(tree).get(url), indent=1))
    except ControlError as exc:
        _fail(str(exc))


jobs_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="The jobs of a standing deployment: submit, list, abort (as the tree's operator).",
)
edge_app.add_typer(jobs_app, name="jobs")


@jobs_app.command("submit")
def jobs_submit(
    job: Annotated[Path, typer.Argument(help="The job file (JSON).")],
    server: Server,
    tree: Annotated[Path, typer.Option("--tree", help="Folder with the operator credential.")],
) -> None:
    """Submit a job; print its id. Its initial_parameters file, if any, is read here."""
    from redfl.edge.control import ControlError

    spec, model = read_job(job, "JOB")
    try:
        summary = _operator(tree).submit_spec(_https(server, "--server"), spec, model)
    except ControlError as exc:
        _fail(str(exc))
    typer.echo(f"{summary['job_id']}  {summary['folder']}")


@jobs_app.command("list")
def jobs_list(
    server: Server,
    tree: Annotated[Path, typer.Option("--tree", help="Folder with the operator credential.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List every job of the server: id, status, version, updates accepted."""
    from redfl.edge.control import ControlError

    try:
        jobs = _operator(tree).jobs(_https(server, "--server"))
    except ControlError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(jobs, indent=1))
        return
    typer.echo(f"{'job':32} {'status':10} {'version':>9} {'accepted':>9}  client")
    for one in jobs:
        version = f"{one['version']}/{one['rounds_planned']}"
        typer.echo(
            f"{one['job_id']:32} {one['status']:10} {version:>9} {one['accepted']:>9}  "
            f"{one['client']}"
        )


@jobs_app.command("abort")
def jobs_abort(
    job_id: Annotated[str, typer.Argument(help="The job's id (jobs list).")],
    server: Server,
    tree: Annotated[Path, typer.Option("--tree", help="Folder with the operator credential.")],
    reason: Annotated[str, typer.Option(help="Why (kept in its folder).")] = "",
) -> None:
    """Abort a running job: it takes no more updates; its folder says cancelled."""
    from redfl.edge.control import ControlError

    try:
        summary = _operator(tree).abort(_https(server, "--server"), job_id, reason)
    except ControlError as exc:
        _fail(str(exc))
    typer.echo(f"{summary['job_id']} {summary['status']} at version {summary['version']}")


ClientOption = Annotated[
    str, typer.Option("--client", help="The device class, MODULE:CLASS (the job's).")
]


@edge_app.command()
def device(
    proxy: Annotated[str, typer.Option(help="Routing proxy URL (http:// or https://).")],
    credentials: Annotated[
        Path, typer.Option(help="JSON: {device_id, token} or {device_id, secret}.")
    ],
    client: ClientOption,
    job: Annotated[str, typer.Option(help="Job name.")],
    options: Annotated[
        Path | None, typer.Option(help="The device's own options (JSON or TOML), over the job's.")
    ] = None,
    ca: Annotated[Path | None, typer.Option(help="CA to trust for an https proxy.")] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600.0,
    max_tasks: Annotated[int | None, typer.Option(min=1, help="Stop after N tasks.")] = None,
    index: Annotated[int, typer.Option(min=0, help="This device's index in the fleet.")] = 0,
    devices: Annotated[int, typer.Option(min=1, help="The fleet's size (with --index).")] = 1,
) -> None:
    """Run one device: its class trains each task of the job until the job ends."""
    from redfl.core.config import ConfigError
    from redfl.edge.device import Credentials, DeviceError, JobMismatch, run

    scheme = proxy.split("://", 1)[0]
    if scheme not in ("http", "https") or len(proxy) <= len(scheme) + 3:
        _fail(f"--proxy must be an http(s)://host:port URL, got {proxy!r}")
    if index >= devices:
        _fail(f"--index {index} must be below --devices {devices}")
    try:
        creds = Credentials.read(credentials)
    except ValueError as exc:
        _fail(f"--credentials {exc}")
    own = _read_options(options)
    try:
        outcome = run(
            proxy,
            creds,
            client,
            job,
            own,
            ca=str(ca) if ca else None,
            timeout=timeout,
            max_tasks=max_tasks,
            index=index,
            num_devices=devices,
        )
    except (ConfigError, JobMismatch) as exc:  # the device's own class or options
        _fail(str(exc))
    except DeviceError as exc:
        typer.echo(f"redfl: error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"{outcome.device_id}: {outcome.tasks} tasks, {outcome.accepted} accepted, "
        f"{len(outcome.rejected)} rejected, {len(outcome.failed)} failed; job {outcome.job_id} "
        f"{'ended' if outcome.done else 'running'} at version {outcome.version}"
        + (f" ({outcome.reason})" if outcome.reason else "")
    )


@edge_app.command()
def simulate(
    proxy: Annotated[str, typer.Option(help="Routing proxy URL (http:// or https://).")],
    job: Annotated[str, typer.Option(help="Job name.")],
    client: ClientOption,
    devices: Annotated[int, typer.Option(min=1, help="Simulated devices.")] = 10_000,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at most.")] = 64,
    options: Annotated[
        Path | None, typer.Option(help="The devices' own options (JSON or TOML), over the job's.")
    ] = None,
    delay: Annotated[
        float, typer.Option(min=0.0, help="A device waits up to this many seconds to report.")
    ] = 0.0,
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
    timeout: Annotated[
        float, typer.Option(help="Give up after this many seconds (a dead proxy too).")
    ] = 600.0,
) -> None:
    """Simulate devices running the class --client against a proxy until the job ends;
    print a summary (exit 1 if it did not end)."""
    from redfl.core.config import ConfigError
    from redfl.edge.device import JobMismatch
    from redfl.edge.simulator import SimulatorConfig, print_summary, run_simulation

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
    own = _read_options(options)
    config = SimulatorConfig(
        proxy,
        job,
        client,
        devices,
        concurrency,
        enroll_secret,
        seed,
        timeout,
        tokens=issued,
        ca=str(ca) if scheme == "https" and ca is not None else None,
        options=own,
        delay=delay,
    )
    try:
        summary = run_simulation(config, progress=sys.stderr.isatty())
    except JobMismatch as exc:
        _fail(str(exc))
    except ConfigError as exc:
        _fail(str(exc))
    print_summary(summary)
    if not summary.done:
        if summary.error:
            typer.echo(f"redfl: error: {summary.error}", err=True)
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
    each: Annotated[
        Path | None,
        typer.Option(
            help="Also write DIR/<id>.json per device ({device_id, token}, mode 0600): the "
            "--credentials of 'redfl edge device'."
        ),
    ] = None,
) -> None:
    """Issue a token in advance to each device id and record the ids in the register; an id
    that already holds a credential is refused (revoke it first)."""
    import os

    if (ids is None) == (count is None):
        _fail("give exactly one of --ids FILE and --count N")
    if out.exists():
        _fail(f"--out {out} exists; refusing to overwrite tokens")
    if each is not None and each.exists() and any(each.iterdir()):
        _fail(f"--each {each} exists and is not empty; refusing to overwrite credentials")
    names = _id_list(ids) if ids is not None else [f"{prefix}{i:05d}" for i in range(count or 0)]
    fleet = _fleet(tree)
    try:
        tokens = fleet.issue(names, days)
    except ValueError as exc:
        _fail(str(exc))

    def private(path: Path, data: object) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)

    private(out, tokens)
    if each is not None:
        each.mkdir(parents=True, exist_ok=True)
        for device_id, token in tokens.items():
            private(each / f"{device_id}.json", {"device_id": device_id, "token": token})
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
