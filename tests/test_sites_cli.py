"""``redfl sites init/add/revoke/list`` and ``redfl site run``: what they write, and one line
(exit 2) for every bad input, a refused credential included."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from sites_rig import serve
from typer.testing import CliRunner

from redfl.cli import app
from redfl.runtime.sites.config import require_extra
from redfl.trust import Bundle, TrustHome


def redfl(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def error_line(result: Result) -> str:
    """The one line of a refusal (exit 2, nothing else on stderr)."""
    assert result.exit_code == 2, (result.output, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("redfl: error: "), result.stderr
    return lines[0].removeprefix("redfl: error: ")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "fed-home"
    done = redfl("sites", "init", str(folder), "--server-name", "127.0.0.1")
    assert done.exit_code == 0, done.stderr
    assert (
        done.output == f"created the federation home {folder} (server certificate for 127.0.0.1)\n"
    )
    return folder


def test_init_keeps_the_ca_key_private_and_refuses_an_existing_home(home: Path) -> None:
    assert stat.S_IMODE((home / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert "it exists and is a trust home" in error_line(redfl("sites", "init", str(home)))


def test_add_writes_a_private_bundle_with_the_server_url_and_list_shows_it(home: Path) -> None:
    out = home.parent / "hospital-a" / "credentials.json"
    url = "https://127.0.0.1:8443"
    done = redfl(
        "sites", "add", "hospital-a", "--home", str(home), "--server-url", url, "--out", str(out)
    )
    assert done.exit_code == 0, done.stderr
    serial = r"\(serial [0-9a-f]+\)"
    said = rf"wrote {re.escape(str(out))}: site hospital-a {serial}; send it to the site\n"
    assert re.fullmatch(said, done.output)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    bundle = Bundle.load(out)
    assert bundle.fields == {"server_url": url} and bundle.identity.kind == "site"
    listed = redfl("sites", "list", "--home", str(home))
    assert listed.exit_code == 0
    assert re.fullmatch(r"hospital-a +[0-9a-f]{40}  until \d{4}-\d\d-\d\d  valid\n", listed.output)


def test_revoke_marks_the_site_and_list_shows_why(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    redfl(
        "sites", "add", "b", "--home", str(home), "--server-url", "https://h:1", "--out", str(out)
    )
    done = redfl("sites", "revoke", "b", "--home", str(home), "--reason", "left the study")
    assert done.exit_code == 0 and done.output.startswith("revoked site b (serial ")
    assert "revoked: left the study" in redfl("sites", "list", "--home", str(home)).output
    assert "the register holds only revoked credentials" in error_line(
        redfl("sites", "revoke", "b", "--home", str(home))
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--server-url", "http://h:1"],
            "the server URL must be https://HOST[:PORT], got 'http://h:1'",
        ),
        (["--server-url", "https://h:1/path"], "the server URL must be https://HOST[:PORT]"),
        (["--server-url", "https://h:1", "--days", "0"], "a validity in days must be a positive"),
    ],
)
def test_add_refuses_bad_input_in_one_line(
    home: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "x.json"
    result = redfl("sites", "add", "x", "--home", str(home), "--out", str(out), *args)
    assert message in error_line(result) and not out.exists()


def test_add_neither_overwrites_a_file_nor_reissues_a_valid_name(
    home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "a.json"
    url = ["--server-url", "https://h:1"]
    assert redfl("sites", "add", "a", "--home", str(home), *url, "--out", str(out)).exit_code == 0
    again = error_line(redfl("sites", "add", "b", "--home", str(home), *url, "--out", str(out)))
    assert again == f"--out: {out} exists; choose another file"
    assert "\nb " not in "\n" + redfl("sites", "list", "--home", str(home)).output  # not issued
    other = tmp_path / "a2.json"
    assert "'a' already has a valid credential" in error_line(
        redfl("sites", "add", "a", "--home", str(home), *url, "--out", str(other))
    )


def test_a_missing_home_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert error_line(redfl("sites", "list", "--home", str(missing))) == (
        f"{missing} does not exist; create it with 'redfl sites init'"
    )


def test_a_sites_run_without_its_home_fails_before_any_folder_exists(tmp_path: Path) -> None:
    config = tmp_path / "sites.toml"
    config.write_text(
        '[federation]\nruntime = "sites"\n'
        '[client]\ntarget = "redfl.examples.echo:EchoClient"\nnum_clients = 1\n'
        '[sites]\nhome = "no-home"\nexpected = ["a"]\n'
    )
    result = redfl("run", str(config), "--out", str(tmp_path / "run"))
    assert error_line(result) == (
        f"federation.runtime: sites.home: {tmp_path / 'no-home'} does not exist; "
        "create it with 'redfl sites init'"
    )
    assert not (tmp_path / "run").exists()


def test_the_missing_extra_is_named_in_one_line() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "runtime 'sites' needs the sites extra (pip install 'redfl[sites]'): missing "
            "no_such_module_here"
        ),
    ):
        require_extra(("uvicorn", "no_such_module_here"), "runtime 'sites'")


# -- redfl site run ----------------------------------------------------------------------
@pytest.fixture
def server(home: Path) -> Iterator[tuple[int, Path]]:
    backend, port = serve(TrustHome(home), ["a"])
    try:
        yield port, home
    finally:
        backend.stop()


def test_a_revoked_site_is_told_why_and_stops(server: tuple[int, Path], tmp_path: Path) -> None:
    port, home = server
    out = tmp_path / "a.json"
    url = f"https://127.0.0.1:{port}"
    redfl("sites", "add", "a", "--home", str(home), "--server-url", url, "--out", str(out))
    redfl("sites", "revoke", "a", "--home", str(home), "--reason", "compromised")
    result = redfl(
        "site", "run", "--credentials", str(out), "--client", "redfl.examples.echo:EchoClient"
    )
    line = error_line(result)
    assert re.fullmatch(
        r"the server refused this site: refused: site 'a' \(serial [0-9a-f]+\) was revoked at "
        r".*: compromised",
        line,
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("missing", "--credentials: {folder}/none.json does not exist"),
        ("open", "--credentials: refusing bundle: {folder}/open.json holds a private key but is"),
        ("options", "invalid config: options.epochs: Input should be a valid integer"),
        ("client", "--client: cannot import 'redfl.examples.nothing:Client'"),
    ],
)
def test_site_run_refuses_bad_input_before_connecting(
    home: Path, tmp_path: Path, make: str, message: str
) -> None:
    out = tmp_path / "open.json" if make == "open" else tmp_path / "a.json"
    redfl(
        "sites",
        "add",
        "a",
        "--home",
        str(home),
        "--server-url",
        "https://127.0.0.1:1",
        "--out",
        str(out),
    )
    client = "redfl.examples.digits_files:FileDigitsClient"
    options = tmp_path / "options.toml"
    options.write_text('epochs = "many"\n' if make == "options" else 'data = "x.npz"\n')
    credentials = tmp_path / "none.json" if make == "missing" else out
    if make == "open":
        out.chmod(0o644)
    if make == "client":
        client = "redfl.examples.nothing:Client"
    command = ["site", "run", "--credentials", str(credentials), "--client", client]
    result = redfl(*command, "--options", str(options))
    assert error_line(result).startswith(message.format(folder=tmp_path))
    assert json.loads(out.read_text())["format"] == "redfl-trust-bundle"
