"""``redfl model serve RUN_DIR | list | stop NAME | token NAME | revoke NAME``: a run folder's
model on Ray Serve, a thin shell over :mod:`redfl.run.serving`.

``serve`` on the embedded Ray instance (no ``--address``, no ``$RAY_ADDRESS``) serves until
Ctrl-C, SIGTERM or ``redfl model stop NAME`` from another terminal; on a cluster it returns
and the model stays served there until ``redfl model stop NAME``.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from redfl.commands.run_cmd import EXIT_BAD_INPUT, EXIT_FAILED, AddressOption, fail
from redfl.core.config import ConfigError
from redfl.run.deployments import TOKEN_FILE, DeploymentStore

if TYPE_CHECKING:  # the serving modules need the `serve` extra: each command imports them
    from redfl.run.serving import DeploymentView
    from redfl.runtime.serving_tokens import IssuedToken

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Serve a run folder's model on Ray Serve (HTTP, bearer tokens); list, stop, tokens.",
)

HomeOption = Annotated[
    str | None,
    typer.Option(help="Deployment records' folder (default $REDFL_MODELS_HOME, ~/.redfl/models)."),
]
DaysOption = Annotated[float, typer.Option(help="Days the new token is valid.")]


@app.command()
def serve(
    run_dir: Annotated[str, typer.Argument(help="The run folder (with model.safetensors).")],
    name: Annotated[
        str | None, typer.Option(help="Deployment name (default: the folder's).")
    ] = None,
    replicas: Annotated[int | None, typer.Option(help="Replicas (default 1).")] = None,
    autoscale: Annotated[
        str | None, typer.Option(help="MIN:MAX replicas, scaled on the requests under way.")
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Requests a replica predicts together.")] = 16,
    batch_wait: Annotated[
        float, typer.Option(help="Seconds a batch waits for more requests.")
    ] = 0.002,
    max_rows: Annotated[int, typer.Option(help="Rows one request may hold.")] = 1024,
    replica_cpus: Annotated[float, typer.Option(help="CPUs each replica reserves.")] = 1.0,
    host: Annotated[str, typer.Option(help="Where the HTTP proxies listen.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Their port.")] = 8000,
    tls_cert: Annotated[str | None, typer.Option(help="PEM certificate: serve HTTPS.")] = None,
    tls_key: Annotated[str | None, typer.Option(help="Its PEM private key.")] = None,
    address: AddressOption = None,
    connect_timeout: Annotated[float, typer.Option(help="Seconds to join the cluster.")] = 30.0,
    token_days: DaysOption = 30.0,
    home: HomeOption = None,
) -> None:
    """Deploy the model of RUN_DIR; print its URL and a token (shown once).

    Serving a folder imports and runs the code of the client class that trained it.
    """
    from redfl.run.serving import ServeOptions, deploy_run, stop_deployment, wait_while_served

    try:
        options = ServeOptions.of(
            name=name,
            replicas=replicas,
            autoscale=autoscale,
            max_batch=max_batch,
            batch_wait_s=batch_wait,
            max_rows=max_rows,
            replica_cpus=replica_cpus,
            host=host,
            port=port,
            tls_cert=tls_cert,
            tls_key=tls_key,
            address=address,
            connect_timeout=connect_timeout,
            token_days=token_days,
        )
        deployed = deploy_run(run_dir, options, home=home)
    except ConfigError as error:
        raise fail(EXIT_BAD_INPUT, str(error)) from None
    except (ConnectionError, RuntimeError) as error:
        raise fail(EXIT_FAILED, str(error)) from None
    record = deployed.record
    scaling = options.scaling()
    replicas_text = (
        f"{scaling.replicas} replica(s)"
        if scaling.autoscale is None
        else f"{scaling.autoscale[0]}-{scaling.autoscale[1]} replicas (autoscaled)"
    )
    token_file = DeploymentStore(home).folder(record.name) / TOKEN_FILE
    typer.echo(f"serving {record.name}: {record.client['target']} from {record.run}")
    typer.echo(f"  {replicas_text}, batches of up to {options.max_batch} requests")
    typer.echo(f"  POST {deployed.url}")
    typer.echo(f"  GET  {record.url}/health")
    typer.echo(f"token (shown once; also in {token_file}, mode 0600):")
    typer.echo(deployed.token.token)
    typer.echo(
        f'try: curl -H "Authorization: Bearer $(cat {token_file})" '
        f"-d '{{\"inputs\": [[0, 0, ...]]}}' {deployed.url}"
    )
    if not record.embedded:
        typer.echo(
            f"it runs on the Ray cluster at {record.address}; redfl model stop {record.name}"
        )
        return
    typer.echo(f"serving until Ctrl-C (or redfl model stop {record.name})")
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        gone = wait_while_served(record.name, stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if gone:
        DeploymentStore(home).remove(record.name)
        typer.echo(f"{record.name} was stopped")
    else:
        typer.echo(stop_deployment(record.name, home))


@app.command("list")
def list_(
    address: AddressOption = None,
    home: HomeOption = None,
) -> None:
    """List the served models: status, replicas, URL, run folder, tokens."""
    from redfl.run.serving import list_deployments

    try:
        views = list_deployments(home, address)
    except ConfigError as error:
        raise fail(EXIT_BAD_INPUT, str(error)) from None
    except ConnectionError as error:
        raise fail(EXIT_FAILED, str(error)) from None
    if not views:
        typer.echo("no served models")
        return
    rows = [["name", "status", "replicas", "url", "run", "tokens"]] + [_row(v) for v in views]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row, view in zip(rows, [None, *views], strict=True):
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        typer.echo(line.rstrip() + (f"  ({view.note})" if view is not None and view.note else ""))


def _row(view: DeploymentView) -> list[str]:
    state, record = view.state, view.record
    status = "-" if state is None else state.status
    replicas = "-" if state is None else f"{state.running} running"
    if record is None:
        return [view.name, status, replicas, "-", "-", "-"]
    now = time.time()
    valid = sum(1 for t in record.tokens if not t.revoked and t.expires_at > now)
    return [view.name, status, replicas, record.url or "-", record.run, f"{valid} valid"]


@app.command()
def stop(
    name: Annotated[str, typer.Argument(help="The deployment.")],
    address: AddressOption = None,
    home: HomeOption = None,
) -> None:
    """Stop a served model and remove its record."""
    from redfl.run.serving import stop_deployment

    try:
        typer.echo(stop_deployment(name, home, address))
    except ConfigError as error:
        raise fail(EXIT_BAD_INPUT, str(error)) from None
    except ConnectionError as error:
        raise fail(EXIT_FAILED, str(error)) from None


@app.command()
def token(
    name: Annotated[str, typer.Argument(help="The deployment.")],
    days: DaysOption = 30.0,
    home: HomeOption = None,
) -> None:
    """Issue another token for a served model (printed once)."""
    from redfl.run.serving import issue_token

    try:
        issued = issue_token(name, days, home)
    except ConfigError as error:
        raise fail(EXIT_BAD_INPUT, str(error)) from None
    _print_token(issued)


@app.command()
def revoke(
    name: Annotated[str, typer.Argument(help="The deployment.")],
    token_ids: Annotated[list[str] | None, typer.Argument(help="Ids of the tokens.")] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Revoke every token (a new key); print a new one.")
    ] = False,
    days: DaysOption = 30.0,
    home: HomeOption = None,
) -> None:
    """Revoke tokens of a served model; returns once every replica refuses them."""
    from redfl.run.serving import revoke_tokens

    try:
        issued = revoke_tokens(name, token_ids or [], every=every, days=days, home=home)
    except ConfigError as error:
        raise fail(EXIT_BAD_INPUT, str(error)) from None
    except (ConnectionError, RuntimeError) as error:
        raise fail(EXIT_FAILED, str(error)) from None
    typer.echo(f"revoked {'every token' if every else ', '.join(token_ids or [])} of {name}")
    if issued is not None:
        _print_token(issued)


def _print_token(issued: IssuedToken) -> None:
    expires = datetime.fromtimestamp(issued.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    typer.echo(f"token {issued.token_id} (shown once), valid until {expires}:")
    typer.echo(issued.token)
