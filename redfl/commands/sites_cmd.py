"""``redfl sites ...`` (the federation home: its CA and the sites' credentials) and
``redfl site run`` (a site serving its client).

Thin shells over :mod:`redfl.runtime.sites.admin` and :func:`redfl.runtime.sites.agent.
run_site`. Bad input exits 2 with one line ``redfl: error: ...`` on stderr, as does a site
whose credential the server refuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from redfl.commands.run_cmd import EXIT_BAD_INPUT, EXIT_CANCELLED, fail
from redfl.runtime.sites.admin import issue_site, list_sites, open_home
from redfl.runtime.sites.config import SITE_EXTRA, require_extra
from redfl.trust import TrustHome

__all__ = ["register", "site_app", "sites_app"]

sites_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="The federation home: its CA, the server's certificate, the sites' credentials.",
)
site_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Run a site: the user's client, at its site, serving the server's rounds.",
)

Home = Annotated[Path, typer.Option("--home", help="The federation home (redfl sites init).")]


def _home(path: Path) -> TrustHome:
    try:
        return open_home(path)
    except ValueError as error:
        raise fail(EXIT_BAD_INPUT, str(error).removeprefix("sites.home: ")) from None


@sites_app.command("init")
def init(
    home: Annotated[Path, typer.Argument(help="The folder to create.")],
    server_name: Annotated[
        list[str] | None,
        typer.Option(
            "--server-name",
            help="An IP address or DNS name sites reach the server at (repeat; default "
            "127.0.0.1 and localhost).",
        ),
    ] = None,
) -> None:
    """Create a federation home: a CA (its key stays in HOME, mode 0600), the server's TLS
    certificate for its names, and an empty register of sites."""
    names = server_name or ["127.0.0.1", "localhost"]
    try:
        TrustHome.init(home, names)
    except ValueError as error:
        raise fail(EXIT_BAD_INPUT, str(error)) from None
    typer.echo(f"created the federation home {home} (server certificate for {', '.join(names)})")


@sites_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The site's name (its client's node id).")],
    home: Home,
    server_url: Annotated[
        str,
        typer.Option("--server-url", help="Where the site reaches the server: https://HOST:PORT."),
    ],
    out: Annotated[Path, typer.Option("--out", help="The credential file to write (mode 0600).")],
    days: Annotated[int, typer.Option(help="How long the credential is valid.")] = 365,
) -> None:
    """Issue site NAME's credential bundle (its key, its certificate, the CA, the server's
    URL); send the file to the site out of band."""
    trust = _home(home)
    if out.exists():  # before issuing: no credential is registered without its file
        raise fail(EXIT_BAD_INPUT, f"--out: {out} exists; choose another file")
    try:
        bundle = issue_site(trust, name, server_url, days)
        out.parent.mkdir(parents=True, exist_ok=True)
        bundle.write(out)
    except FileExistsError:
        raise fail(EXIT_BAD_INPUT, f"--out: {out} exists; choose another file") from None
    except (ValueError, OSError) as error:
        raise fail(EXIT_BAD_INPUT, str(error)) from None
    identity = bundle.identity
    typer.echo(
        f"wrote {out}: site {identity.name} (serial {identity.serial:x}); send it to the site"
    )


@sites_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The site to revoke.")],
    home: Home,
    reason: Annotated[str, typer.Option(help="Why (kept in the register).")] = "revoked",
) -> None:
    """Revoke site NAME's credential: the server refuses it from its next request on, even
    in the middle of a run."""
    trust = _home(home)
    try:
        records = trust.revoke(name, reason)
    except ValueError as error:
        raise fail(EXIT_BAD_INPUT, str(error)) from None
    serials = ", ".join(f"{record.serial:x}" for record in records)
    typer.echo(f"revoked site {name} (serial {serials}): {reason}")


@sites_app.command("list")
def list_(home: Home) -> None:
    """List the sites' credentials: name, serial, valid until, state."""
    sites = list_sites(_home(home))
    if not sites:
        typer.echo("no sites yet (redfl sites add NAME --home ...)")
    for site in sites:
        until = f"{site.not_after:%Y-%m-%d}"
        typer.echo(f"{site.name:<24} {site.serial:040x}  until {until}  {site.state}")


@site_app.command("run")
def run(
    credentials: Annotated[
        Path, typer.Option("--credentials", help="The site's credential bundle (redfl sites add).")
    ],
    client: Annotated[
        str, typer.Option("--client", help="The client class, module:Class (as simulated).")
    ],
    options: Annotated[
        Path | None, typer.Option("--options", help="The client's options (a TOML file).")
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="The folder the site runs in.")
    ] = None,
    stay: Annotated[bool, typer.Option("--stay", help="Serve the next run when one ends.")] = False,
) -> None:
    """Run a site: join the server of CREDENTIALS (outbound only), run the client's rounds
    and print one line per task; reconnects after a network loss or a server restart."""
    try:
        require_extra(SITE_EXTRA, "redfl site run")
    except ValueError as error:
        raise fail(EXIT_BAD_INPUT, str(error)) from None
    from redfl.runtime.sites.agent import SiteRefused, run_site

    try:
        run_site(
            credentials.resolve(),
            client,
            None if options is None else options.resolve(),
            workdir=workdir,
            stay=stay,
            echo=lambda line: typer.echo(line),
        )
    except (ValueError, SiteRefused) as error:
        raise fail(EXIT_BAD_INPUT, str(error)) from None
    except KeyboardInterrupt:
        raise fail(EXIT_CANCELLED, "stopped") from None


def register(app: typer.Typer) -> None:
    """Add ``redfl sites ...`` and ``redfl site run`` to the CLI."""
    app.add_typer(sites_app, name="sites")
    app.add_typer(site_app, name="site")
