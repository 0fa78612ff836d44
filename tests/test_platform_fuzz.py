"""Schemathesis over the platform's whole OpenAPI schema, as admin: no server errors.

Bounded: a few examples per operation, no deadline per example (argon2 is slow on purpose).
Every operation of the schema is exercised in-process (ASGI); a 5xx is collected with the
request that caused it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from platform_app import add_user, bearer, make_app
from schemathesis.core.result import Err, Ok

EXAMPLES_PER_OPERATION = 10


def test_no_server_errors_anywhere_in_the_schema(tmp_path: Path) -> None:
    app = make_app(tmp_path / "fuzz")
    add_user(app, "ada", "admin")
    add_user(app, "rita", "researcher")
    headers = bearer(app, "ada")
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    results = list(schema.get_all_operations())
    invalid = [r.err() for r in results if isinstance(r, Err)]
    assert invalid == []  # the schema itself is valid
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    documented = sum(len(ops) for ops in app.openapi()["paths"].values())
    assert len(operations) == documented >= 24
    server_errors: list[str] = []
    calls = 0

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def exercise(case: Any) -> None:
            nonlocal calls
            response = case.call(headers=headers)
            calls += 1
            if response.status_code >= 500:
                server_errors.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{case.as_curl_command()}"
                )

        exercise()
    assert server_errors == []
    assert calls >= len(operations)
