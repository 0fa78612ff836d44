"""``redfl edge``: the routing proxy, the server and LCPs of an edge job, and the simulator.

Bad input exits with status 2 and one line ``redfl: error: ...`` on stderr.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Literal, NoReturn

import typer
from pydantic import ValidationError

from redfl.edge.jobs import JobSpec

__all__ = ["edge_app", "register"]

edge_app = typer.Typer(
    add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True, help=__doc__
)

Host = Annotated[str, typer.Option(help="Interface to bind.")]
Tree = Annotated[Path, typer.Option("--tree", help="Provisioning folder with lcp_map.json.")]


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


@edge_app.command()
def proxy(tree: Tree, port: int = 8000, host: Host = "127.0.0.1") -> None:
    """Serve the routing proxy for the LCPs of TREE/lcp_map.json."""
    from redfl.edge.serve import serve_proxy

    try:
        from redfl.edge.provision import load_or_create_secrets, read_lcp_map

        read_lcp_map(tree)
        load_or_create_secrets(tree)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    serve_proxy(tree, host, port)


@edge_app.command()
def server(
    job: Annotated[Path, typer.Option(help="Job file (JSON).")],
    port: int = 8100,
    host: Host = "127.0.0.1",
) -> None:
    """Serve the edge server (global model, FedBuff, selection) of one job."""
    from redfl.edge.serve import serve_server

    serve_server(read_job(job), host, port)


@edge_app.command()
def lcp(
    name: Annotated[str, typer.Option(help="LCP name, as in lcp_map.json.")],
    server: Annotated[str, typer.Option(help="Edge server URL.")],
    port: int = 9000,
    host: Host = "127.0.0.1",
) -> None:
    """Serve one LCP."""
    from redfl.edge.serve import serve_lcp

    serve_lcp(name, server, host, port)


@edge_app.command()
def up(
    tree: Tree,
    job: Annotated[Path, typer.Option(help="Job file (JSON).")],
    port: int = 8000,
    server_port: int = 8100,
) -> None:
    """Start the server, every LCP of TREE/lcp_map.json and the proxy on this host."""
    from redfl.edge.launch import EdgeProcesses

    read_job(job)
    try:
        deployment = EdgeProcesses(tree, job, port, server_port)
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
def simulate(
    proxy: Annotated[str, typer.Option(help="Routing proxy URL.")],
    job: Annotated[str, typer.Option(help="Job name.")],
    devices: Annotated[int, typer.Option(min=1, help="Simulated devices.")] = 10_000,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at most.")] = 64,
    task: Annotated[str, typer.Option(help="digits or numeric.")] = "digits",
    enroll_secret: Annotated[
        str, typer.Option(envvar="REDFL_EDGE_ENROLL_SECRET", help="Enrollment secret.")
    ] = "",
    tree: Annotated[Path | None, typer.Option(help="Read the secret from here.")] = None,
    seed: int = 0,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600.0,
) -> None:
    """Simulate devices against a proxy until the job is done; print a summary."""
    from redfl.edge.simulator import SimulatorConfig, print_summary, run_simulation

    if task not in ("digits", "numeric"):
        _fail(f"--task must be 'digits' or 'numeric', got {task!r}")
    if not proxy.startswith("http://") or len(proxy) <= len("http://"):
        _fail(f"--proxy must be an http://host:port URL, got {proxy!r}")
    if tree is not None:
        from redfl.edge.provision import load_or_create_secrets

        try:
            enroll_secret = load_or_create_secrets(tree).enroll_secret
        except (ValueError, OSError) as exc:
            _fail(str(exc))
    if not enroll_secret:
        _fail("--enroll-secret (or REDFL_EDGE_ENROLL_SECRET, or --tree) is required")
    kind: Literal["digits", "numeric"] = "digits" if task == "digits" else "numeric"
    config = SimulatorConfig(proxy, job, devices, concurrency, kind, enroll_secret, seed, timeout)
    summary = run_simulation(config, progress=sys.stderr.isatty())
    print_summary(summary)
    if not summary.done:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``edge`` command group to the ``redfl`` app."""
    app.add_typer(edge_app, name="edge", help="Edge devices: proxy, server, LCPs, simulator.")


if __name__ == "__main__":
    edge_app()
