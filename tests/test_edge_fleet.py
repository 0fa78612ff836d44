"""Device identity for fleets: tokens issued in advance, the operator's verifier binding ids
to credentials, the development secret, revocation seen at the next request, the settings'
errors, and ``redfl edge devices``."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import fleet_verifier
import httpx
import pytest
from edge_rig import ThreadedDeployment, provision
from typer.testing import CliRunner

from redfl.core.config import IMPORT_TARGET, ConfigError
from redfl.core.imports import import_targets
from redfl.edge.cli import edge_app
from redfl.edge.errors import Unauthorized
from redfl.edge.fleet import EdgeConfig, EnrollmentConfig, Fleet, load_edge_config
from redfl.edge.jobs import JobSpec
from redfl.edge.tokens import TokenError

SPEC = JobSpec(name="job", task="numeric", num_parameters=4, num_updates_for_model=100)
runner = CliRunner()


def set_mode(folder: Path, text: str) -> None:
    (folder / "edge.toml").write_text(f"[enrollment]\n{text}\n", encoding="utf-8")


def devices(*args: str) -> tuple[int, str]:
    result = runner.invoke(edge_app, ["devices", *args])
    return result.exit_code, result.output  # stdout and stderr as the user sees them


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return provision(tmp_path / "tree")


# -- tokens issued in advance ---------------------------------------------------------------


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedDeployment]:
    folder = provision(tmp_path_factory.mktemp("tree"))  # edge.toml: mode = "issued"
    deployment = ThreadedDeployment(SPEC, ["lcp-1-1", "lcp-2-1"], folder, Fleet.of_tree(folder))
    yield deployment
    deployment.close()


def job(edge: ThreadedDeployment, token: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"}
    return httpx.post(f"{edge.url['proxy']}/job", json={"job_name": "job"}, headers=headers)


def test_tokens_issued_in_advance_work_and_enrolment_is_closed(
    issued: ThreadedDeployment, tmp_path: Path
) -> None:
    out = tmp_path / "tokens.json"
    code, text = devices("issue", "--tree", str(issued.folder), "--count", "3", "--out", str(out))
    assert code == 0 and text == f"issued 3 device tokens to {out}\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    tokens = json.loads(out.read_text())
    assert list(tokens) == ["device-00000", "device-00001", "device-00002"]
    assert all(job(issued, t).json()["status"] == "OK" for t in tokens.values())
    closed = httpx.post(
        f"{issued.url['proxy']}/enroll", json={"device_id": "device-00000", "secret": "anything"}
    )
    assert closed.status_code == 401 and closed.json()["reason"].startswith("enrolment is closed")
    # a token the proxy's secret signed for an id never issued: not in the fleet
    stray = issued.fleet.signer.issue("device-99999")[0]
    refused = job(issued, stray)
    assert refused.status_code == 401
    assert refused.json()["reason"] == "device 'device-99999' is not enrolled in this fleet"


def test_an_issued_id_cannot_be_claimed_again_and_revocation_is_immediate(
    issued: ThreadedDeployment, tmp_path: Path
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("# the fleet\nsensor-a\n\nsensor-b\n", encoding="utf-8")
    first, again = tmp_path / "first.json", tmp_path / "again.json"
    tree = str(issued.folder)
    assert devices("issue", "--tree", tree, "--ids", str(ids), "--out", str(first))[0] == 0
    old = json.loads(first.read_text())
    code, text = devices("issue", "--tree", tree, "--ids", str(ids), "--out", str(again))
    assert code == 2 and "sensor-a, sensor-b already hold a credential: revoke them first" in text
    assert not again.exists()
    assert job(issued, old["sensor-a"]).json()["status"] == "OK"
    code, text = devices("revoke", "--tree", tree, "--id", "sensor-a", "--reason", "lost")
    assert (code, text) == (0, "revoked 1 devices\n")
    refused = job(issued, old["sensor-a"])  # the proxy's next request sees it
    assert refused.status_code == 401
    assert refused.json()["reason"].startswith("device 'sensor-a' was revoked at ")
    assert refused.json()["reason"].endswith(": lost")
    assert job(issued, old["sensor-b"]).json()["status"] == "OK"
    # issued anew: the new token works, the one from before the revocation does not
    one = tmp_path / "one.txt"
    one.write_text("sensor-a\n", encoding="utf-8")
    assert devices("issue", "--tree", tree, "--ids", str(one), "--out", str(again))[0] == 0
    assert job(issued, json.loads(again.read_text())["sensor-a"]).json()["status"] == "OK"
    stale = job(issued, old["sensor-a"])
    assert stale.status_code == 401
    assert stale.json()["reason"] == "token issued before the device's current credential"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--count", "2", "--ids", "x"], "give exactly one of --ids FILE and --count N"),
        ([], "give exactly one of --ids FILE and --count N"),
        (["--ids", "/nonexistent/ids"], "--ids /nonexistent/ids: No such file or directory"),
    ],
)
def test_issue_refuses_bad_input_with_one_line(
    folder: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    code, text = devices("issue", "--tree", str(folder), "--out", str(tmp_path / "t"), *args)
    assert code == 2 and text == f"redfl: error: {message}\n"


def test_issue_refuses_a_bad_id_and_an_existing_file(folder: Path, tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("ok-1\nnot ok\n", encoding="utf-8")
    code, text = devices("issue", "--tree", str(folder), "--ids", str(ids), "--out", "x.json")
    assert code == 2 and "'not ok' is not a device id" in text
    out = tmp_path / "out.json"
    out.write_text("{}")
    code, text = devices("issue", "--tree", str(folder), "--count", "1", "--out", str(out))
    assert code == 2 and "exists; refusing to overwrite tokens" in text
    code, text = devices("revoke", "--tree", str(folder), "--id", "ghost", "--reason", "r")
    assert code == 2 and text == "redfl: error: not in the device register: ghost\n"


# -- the operator's verifier ----------------------------------------------------------------


def verifier_fleet(folder: Path, target: str = "fleet_verifier:approve") -> Fleet:
    set_mode(folder, f'mode = "verifier"\nenroll_verifier = "{target}"')
    return Fleet.of_tree(folder)


@pytest.mark.parametrize("target", ["fleet_verifier:approve", "fleet_verifier:approve_async"])
def test_the_verifier_binds_an_id_to_its_first_approved_credential(
    folder: Path, target: str
) -> None:
    fleet = verifier_fleet(folder, target)
    fleet_verifier.CALLS.clear()
    token, _ = asyncio.run(fleet.enroll("cam-7", "attest:cam-7:one"))
    assert fleet.verify(token) == "cam-7"
    again, _ = asyncio.run(fleet.enroll("cam-7", "attest:cam-7:one"))  # same credential
    assert fleet.verify(again) == "cam-7"
    with pytest.raises(Unauthorized, match="device id 'cam-7' is enrolled with another credential"):
        asyncio.run(fleet.enroll("cam-7", "attest:cam-7:two"))  # approved, but not the first
    with pytest.raises(Unauthorized, match="the operator's verifier refused device 'cam-8'"):
        asyncio.run(fleet.enroll("cam-8", "attest:cam-7:one"))
    assert fleet_verifier.CALLS == [
        ("cam-7", "attest:cam-7:one"),
        ("cam-7", "attest:cam-7:one"),
        ("cam-8", "attest:cam-7:one"),
    ]  # each request asked (the other credential was refused before asking)
    # the binding lives in the register: a fresh proxy (another Fleet) keeps it
    other = Fleet.of_tree(folder)
    with pytest.raises(Unauthorized, match="enrolled with another credential"):
        asyncio.run(other.enroll("cam-7", "attest:cam-7:three"))
    register = (folder / "devices.jsonl").read_text()
    assert "attest" not in register  # credentials are kept as digests only
    other.revoke(["cam-7"], "tampered")
    with pytest.raises(TokenError, match=r"device 'cam-7' was revoked at .*: tampered"):
        fleet.verify(token)
    with pytest.raises(Unauthorized, match="device 'cam-7' was revoked"):
        asyncio.run(fleet.enroll("cam-7", "attest:cam-7:one"))


def test_a_verifier_that_raises_refuses(folder: Path) -> None:
    fleet = verifier_fleet(folder, "fleet_verifier:broken")
    with pytest.raises(Unauthorized, match="the operator's verifier refused device 'd'"):
        asyncio.run(fleet.enroll("d", "attest:d:x"))


def test_verifier_enrolment_through_the_proxy(folder: Path) -> None:
    edge = ThreadedDeployment(SPEC, ["lcp-1-1"], folder, verifier_fleet(folder))
    try:
        url = f"{edge.url['proxy']}/enroll"
        good = httpx.post(url, json={"device_id": "cam-1", "secret": "attest:cam-1:a"})
        assert good.status_code == 200 and good.json()["status"] == "OK"
        assert job(edge, good.json()["token"]).json()["status"] == "OK"
        claimed = httpx.post(url, json={"device_id": "cam-1", "secret": "attest:cam-1:b"})
        assert claimed.status_code == 401
        assert claimed.json()["reason"] == "device id 'cam-1' is enrolled with another credential"
        refused = httpx.post(url, json={"device_id": "cam-2", "secret": "guess"})
        assert refused.status_code == 401
    finally:
        edge.close()


def test_the_development_secret_admits_any_id(folder: Path) -> None:
    set_mode(folder, 'mode = "shared-secret"')
    fleet = Fleet.of_tree(folder)
    secret = json.loads((folder / "edge_secrets.json").read_text())["enroll_secret"]
    assert fleet.verify(asyncio.run(fleet.enroll("anyone", secret))[0]) == "anyone"
    with pytest.raises(Unauthorized, match="bad enrollment secret"):
        asyncio.run(fleet.enroll("anyone", "wrong"))


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('mode = "verifier"', "enrollment: mode 'verifier' needs enroll_verifier = 'MODULE:"),
        ('enroll_verifier = "a:b"', "enroll_verifier is only for mode 'verifier', not 'issued'"),
        ('mode = "open"', "enrollment.mode: Input should be 'issued', 'verifier' or"),
        ('mode = "verifier"\nenroll_verifier = "no colon"', "enrollment.enroll_verifier: String"),
        ("token_hours = 0", "enrollment.token_hours: Input should be greater than 0"),
        ("tokens = 1", "enrollment.tokens: unknown key"),
    ],
)
def test_bad_enrolment_settings_name_the_field(folder: Path, text: str, message: str) -> None:
    set_mode(folder, text)
    with pytest.raises(ConfigError, match=r"edge\.toml: ") as caught:
        load_edge_config(folder)
    assert message in str(caught.value)


def test_a_verifier_that_cannot_be_imported_or_called_is_refused(folder: Path) -> None:
    with pytest.raises(ConfigError, match=r"enrollment\.enroll_verifier"):
        verifier_fleet(folder, "fleet_verifier_missing:approve")
    with pytest.raises(ConfigError, match="'fleet_verifier:NOT_A_FUNCTION' is not a function"):
        verifier_fleet(folder, "fleet_verifier:NOT_A_FUNCTION")


def test_enroll_verifier_is_an_import_target_the_platform_checks() -> None:
    config = EdgeConfig(enrollment=EnrollmentConfig(mode="verifier", enroll_verifier="m:f"))
    assert list(import_targets(config)) == [("enrollment.enroll_verifier", "m:f")]
    field = EnrollmentConfig.model_fields["enroll_verifier"]
    assert field.json_schema_extra == IMPORT_TARGET
