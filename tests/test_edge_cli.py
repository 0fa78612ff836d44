"""``redfl edge``: bad input exits 2 with one ``redfl: error:`` line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from edge_rig import provision
from typer.testing import CliRunner

from redfl.edge.cli import edge_app

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(edge_app, list(args))
    return result.exit_code, result.output


NUMERIC = ("--client", "redfl.examples.edge:NumericDevice")


def test_simulate_refuses_a_device_class_it_cannot_import() -> None:
    code, out = run(
        "simulate",
        "--proxy",
        "http://127.0.0.1:1",
        "--job",
        "j",
        "--enroll-secret",
        "s",
        "--client",
        "no_such_module_here:Device",
    )
    assert code == 2 and out.startswith("redfl: error: "), out
    assert "no_such_module_here" in out and len(out.splitlines()) == 1


def test_simulate_refuses_a_proxy_url_it_cannot_reach_safely() -> None:
    code, out = run(
        "simulate", "--proxy", "ftp://proxy:21", "--job", "j", "--enroll-secret", "s", *NUMERIC
    )
    assert code == 2
    assert "redfl: error: --proxy must be an http(s)://host:port URL, got 'ftp://proxy:21'" in out
    code, out = run(
        "simulate",
        "--proxy",
        "https://proxy:8443",
        "--job",
        "j",
        "--enroll-secret",
        "s",
        *NUMERIC,
    )
    assert code == 2
    assert "an https proxy needs --ca FILE or --tree DIR (the CA its certificate chains to)" in out


def test_simulate_needs_the_enrollment_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDFL_EDGE_ENROLL_SECRET", raising=False)
    code, out = run("simulate", "--proxy", "http://127.0.0.1:1", "--job", "j", *NUMERIC)
    assert code == 2 and "--enroll-secret (or REDFL_EDGE_ENROLL_SECRET, or --tree)" in out


def test_proxy_needs_an_lcp_map(tmp_path: Path) -> None:
    code, out = run("proxy", "--tree", str(tmp_path))
    assert code == 2 and f"redfl: error: {tmp_path}/lcp_map.json not found" in out
    (tmp_path / "lcp_map.json").write_text(json.dumps({"lcp-1": {"host": "h", "port": 0}}))
    code, out = run("proxy", "--tree", str(tmp_path))
    assert code == 2 and "entry lcp-1.port: Input should be greater than or equal to 1" in out


def test_server_names_the_bad_job_field(tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"name": "j", "num_updates_for_model": 0}))
    tree = ("--tree", str(tmp_path))
    code, out = run("server", *tree, "--job", str(job))
    assert code == 2 and out.startswith(f"redfl: error: --job {job}: client: Field required; ")
    assert "num_updates_for_model: Input should be greater than or equal to 1 (got 0)" in out
    job.write_text("{")
    assert "not valid JSON" in run("server", *tree, "--job", str(job))[1]
    assert "No such file" in run("server", *tree, "--job", str(tmp_path / "none.json"))[1]
    job.write_text(json.dumps({"client": "redfl.examples.edge:NumericDevice"}))
    code, out = run("server", *tree, "--job", str(job))  # a folder without credentials
    assert code == 2
    assert f"no credential for 'server': {tmp_path}/credentials/server.json is missing" in out


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return provision(tmp_path_factory.mktemp("tree"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["lcp", "--name", "lcp-1-1", "--server", "http://127.0.0.1:1"],
            "--server must be an https://host:port URL (edge hops use TLS), got 'http://127.0.0.1:1'",
        ),
        (
            ["lcp", "--name", "lcp-9", "--server", "https://127.0.0.1:1"],
            "no credential for 'lcp-9'",
        ),
        (
            ["relay", "--name", "agg-1", "--upstream", "https://127.0.0.1:1"],
            "no credential for 'agg-1'",
        ),
        (
            ["relay", "--name", "lcp-1-1", "--upstream", "https://127.0.0.1:1"],
            "--name 'lcp-1-1' is a lcp, not a relay",
        ),
        (["proxy", "--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
        (
            ["proxy", "--tls-cert", "/none/c.pem", "--tls-key", "/none/k.pem"],
            "--tls-cert /none/c.pem / --tls-key /none/k.pem: [Errno 2] No such file or directory",
        ),
    ],
)
def test_components_refuse_bad_options_with_one_line(
    tree: Path, args: list[str], message: str
) -> None:
    code, out = run(args[0], "--tree", str(tree), *args[1:])
    assert code == 2 and out.startswith(f"redfl: error: {message}"), out
    assert len(out.splitlines()) == 1


def test_the_edge_group_is_registered_on_redfl() -> None:
    from redfl.cli import app

    result = runner.invoke(app, ["edge", "--help"])
    assert result.exit_code == 0 and "simulate" in result.output


def test_device_names_a_bad_credentials_file_or_index(tmp_path: Path) -> None:
    creds = tmp_path / "me.json"
    base = ["device", "--proxy", "http://127.0.0.1:1", "--job", "j", *NUMERIC]
    for text, reason in (
        ("{", "not valid JSON"),
        ('{"token": "t"}', "expected {'device_id': ..., 'token' or 'secret': ...}"),
        ('{"device_id": "d"}', "needs a 'token' (issued in advance) or a 'secret' (enrol)"),
    ):
        creds.write_text(text)
        code, out = run(*base, "--credentials", str(creds))
        assert code == 2 and out.startswith(f"redfl: error: --credentials {creds}: {reason}"), out
    code, out = run(*base, "--credentials", str(tmp_path / "none.json"))
    assert code == 2 and "No such file or directory" in out
    code, out = run(*base, "--credentials", str(creds), "--index", "3", "--devices", "2")
    assert code == 2 and out.strip() == "redfl: error: --index 3 must be below --devices 2"
