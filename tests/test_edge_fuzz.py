"""Fuzz the routing proxy's whole OpenAPI schema (bounded): no request gets a 5xx."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from edge_rig import ThreadedDeployment, dev_fleet, provision
from hypothesis import HealthCheck, settings

from redfl.edge.jobs import JobSpec
from redfl.edge.provision import Member
from redfl.edge.proxy import proxy_app
from redfl.edge.tokens import TokenSigner

SPEC = JobSpec(name="job", task="numeric", num_parameters=4)
SIGNER = TokenSigner(b"f" * 32)
FOLDER = provision(Path(tempfile.mkdtemp(prefix="redfl-fuzz-")) / "tree")
schema = schemathesis.openapi.from_dict(
    proxy_app(
        {"lcp-1-1": "https://127.0.0.1:1"}, dev_fleet(FOLDER, SIGNER), Member.load(FOLDER, "proxy")
    ).openapi()
)


@pytest.fixture(scope="module")
def edge() -> Iterator[ThreadedDeployment]:
    fleet = dev_fleet(FOLDER, SIGNER)
    deployment = ThreadedDeployment(SPEC, ["lcp-1-1", "lcp-2-1"], FOLDER, fleet)
    yield deployment
    deployment.close()
    shutil.rmtree(FOLDER.parent, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_server_errors(case: Any, edge: ThreadedDeployment) -> None:
    token = SIGNER.issue("fuzzer")[0]
    for headers in ({"authorization": f"Bearer {token}"}, {}):
        response = case.call(base_url=edge.url["proxy"], headers=headers)
        assert response.status_code < 500, (case.path, response.status_code, response.text)
        assert response.status_code in (200, 400, 401, 405, 413), response.text  # 405: verbs
