"""``redfl head start|stop|status``: a warm local Ray head kept between runs.

``redfl run`` (and any federation of this machine with no ``address``) joins it when it
runs, so a run pays no Ray start; without one, each run starts and stops its own embedded
instance. The head lives in ``$REDFL_HEAD_DIR`` (default ``~/.redfl/head``): its pid and
address (``ray-head.json``), its authentication token (``ray-auth-token``, mode 0600) and
the output of ``ray start`` (``ray-head.log``); Ray's own logs are in its session folder.
Each start makes a new token, so a token of an earlier head is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from redfl.commands.run_cmd import EXIT_BAD_INPUT, EXIT_FAILED, fail

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="A warm local Ray head that runs join instead of starting Ray each time.",
)

Folder = Annotated[
    Path | None,
    typer.Option("--dir", help="The head's folder (default $REDFL_HEAD_DIR or ~/.redfl/head)."),
]


def _folder(given: Path | None) -> Path:
    from redfl.runtime.connect import warm_head_dir

    return (given or warm_head_dir()).expanduser().resolve()


@app.command()
def start(
    num_cpus: Annotated[
        int | None, typer.Option(min=1, help="CPUs the head offers (default: all).")
    ] = None,
    folder: Folder = None,
) -> None:
    """Start the warm head (nothing to do when it already runs)."""
    from redfl.runtime.connect import worker_path
    from redfl.runtime.jobs import TOKEN_FILE, JobError, read_head, start_head

    home = _folder(folder)
    found = read_head(home)
    if found is not None:
        typer.echo(f"the warm Ray head already runs at {found.address} (pid {found.pid})")
        return
    try:
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o700)
        (home / TOKEN_FILE).unlink(missing_ok=True)  # a new head, a new token
    except OSError as error:
        raise fail(EXIT_BAD_INPUT, f"--dir: cannot use {home}: {error}") from None
    try:
        head = start_head(home, num_cpus, jobs=False, worker_path=worker_path(with_cwd=False))
    except JobError as error:
        raise fail(EXIT_FAILED, str(error)) from None
    typer.echo(
        f"started the warm Ray head at {head.address} (pid {head.pid}); "
        f"'redfl run' uses it until 'redfl head stop'"
    )


@app.command()
def stop(folder: Folder = None) -> None:
    """Stop the warm head and every process of it."""
    from redfl.runtime.jobs import HEAD_FILE, read_head, stop_head

    home = _folder(folder)
    found = read_head(home)
    if found is None:
        typer.echo("no warm Ray head runs")
        return
    stop_head(found.pid, timeout=5.0)
    (home / HEAD_FILE).unlink(missing_ok=True)
    typer.echo(f"stopped the warm Ray head (pid {found.pid})")


@app.command()
def status(folder: Folder = None) -> None:
    """Say whether the warm head runs, and where (exit 1 when it does not)."""
    from redfl.runtime.jobs import read_head

    found = read_head(_folder(folder))
    if found is None:
        typer.echo("no warm Ray head runs")
        raise typer.Exit(EXIT_FAILED)
    typer.echo(f"the warm Ray head runs at {found.address} (pid {found.pid})")


def register(root: typer.Typer) -> None:
    """Add ``redfl head ...`` to the root command."""
    root.add_typer(app, name="head")
