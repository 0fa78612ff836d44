"""Fuzz the routing proxy's whole OpenAPI schema (bounded): no request gets a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from edge_rig import ThreadedDeployment
from hypothesis import HealthCheck, settings

from redfl.edge.jobs import JobSpec
from redfl.edge.proxy import proxy_app
from redfl.edge.tokens import TokenSigner

SPEC = JobSpec(name="job", task="numeric", num_parameters=4)
SIGNER = TokenSigner(b"f" * 32)
schema = schemathesis.openapi.from_dict(
    proxy_app({"x": "http://127.0.0.1:1"}, SIGNER, "s").openapi()
)


@pytest.fixture(scope="module")
def edge() -> Iterator[ThreadedDeployment]:
    deployment = ThreadedDeployment(SPEC, ["lcp-a", "lcp-b"], signer=SIGNER)
    yield deployment
    deployment.close()


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
        assert response.status_code in (200, 400, 401, 405), response.text  # 405: other verbs
