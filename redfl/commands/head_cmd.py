"""``redfl head start|stop|status``: a warm local Ray head kept between runs, and the Ray
head of a platform data folder (``--data``: started by ``redfl serve``, it outlives it).

``redfl run`` (and any federation of this machine with no ``address``) joins it when it
runs, so a run pays no Ray start; without one, each run starts and stops its own embedded
instance. The head lives in ``$REDFL_HEAD_DIR`` (default ``~/.redfl/head``): its pid and
address (``ray-head.json``), its authentication token (``ray-auth-token``, mode 0600) and
the output of ``ray start`` (``ray-head.log``); Ray's own logs are in its session folder.
Each start makes a new token, so a token of an earlier head is refused.

``status`` and ``stop`` with ``--data DIR`` look at the head that ``redfl serve`` started for
that data folder instead (the same kind of head, with a job server); stopping it ends the
runs' jobs and workers it holds, and runs in flight are marked failed by the next server
that starts.
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


DataFolder = Annotated[
    Path | None,
    typer.Option(
        "--data", help="A platform data folder: its Ray head (started by redfl serve) instead."
    ),
]
Grace = Annotated[
    float, typer.Option("--grace", min=0.0, max=600.0, help="Seconds SIGTERM may take.")
]


def _folder(given: Path | None) -> Path:
    from redfl.runtime.connect import warm_head_dir

    return (given or warm_head_dir()).expanduser().resolve()


def _data_or_warm(folder: Path | None, data: Path | None) -> Path | None:
    """The platform data folder when ``--data`` was given (``None``: the warm head)."""
    if folder is not None and data is not None:
        raise fail(EXIT_BAD_INPUT, "--data: give --dir (the warm head) or --data, not both")
    return data


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
def stop(folder: Folder = None, data: DataFolder = None, grace: Grace = 3.0) -> None:
    """Stop the warm head (or the data folder's head) and every process of it within
    seconds: SIGTERM, then SIGKILL after --grace."""
    import time

    from redfl.runtime.jobs import HEAD_FILE, group_alive, read_head, stop_head

    platform = _data_or_warm(folder, data)
    home = platform if platform is not None else _folder(folder)
    found = read_head(home)
    if found is None:
        typer.echo("no warm Ray head runs" if platform is None else f"no Ray head runs for {data}")
        return
    started = time.monotonic()
    stop_head(found.pid, timeout=grace)
    if group_alive(found.pid):
        raise fail(EXIT_FAILED, f"the Ray head (pid {found.pid}) is still running")
    (home / HEAD_FILE).unlink(missing_ok=True)
    what = "the warm Ray head" if platform is None else "the Ray head"
    typer.echo(f"stopped {what} (pid {found.pid}) in {time.monotonic() - started:.1f} s")


@app.command()
def status(folder: Folder = None, data: DataFolder = None) -> None:
    """Say whether the warm head (or the data folder's head) runs, and where (exit 1 when it
    does not)."""
    from redfl.runtime.jobs import read_head

    platform = _data_or_warm(folder, data)
    found = read_head(platform if platform is not None else _folder(folder))
    if found is None:
        typer.echo("no warm Ray head runs" if platform is None else f"no Ray head runs for {data}")
        raise typer.Exit(EXIT_FAILED)
    if platform is None:
        typer.echo(f"the warm Ray head runs at {found.address} (pid {found.pid})")
    else:
        typer.echo(f"Ray head pid {found.pid}: GCS {found.address}, job server {found.job_server}")


def register(root: typer.Typer) -> None:
    """Add ``redfl head ...`` to the root command."""
    root.add_typer(app, name="head")
