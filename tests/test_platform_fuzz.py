"""Fuzzing the platform's whole OpenAPI schema, as admin: no server errors.

Schemathesis exercises every operation of the schema in-process (ASGI) with a few examples
each, a part of them with lone surrogates (text that cannot be UTF-8) put into the body's
strings; then every operation is walked once more with what generators rarely make: JSON
bodies nested 50,000 deep, every string of the body a lone surrogate, and query and path
values that are not UTF-8. A 5xx is collected with the request that caused it; every reply
must still be JSON (or the file it serves).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from platform_app import add_user, bearer, make_app
from schemathesis.core.result import Err, Ok

EXAMPLES_PER_OPERATION = 10
LONE = ["\ud800", "a\udfffb", "\udbff", "x\udc00\ud800y"]
"""Lone surrogates: valid in a JSON escape, impossible in UTF-8."""
NOT_UTF8 = "%ED%A0%80"
"""A lone surrogate as UTF-8 would write it, percent-encoded: bytes that do not decode."""


def _poisoned(value: Any, text: str) -> Any:
    """``value`` with every string in it (keys included) made to hold ``text``."""
    if isinstance(value, str):
        return value + text
    if isinstance(value, dict):
        return {_poisoned(k, text): _poisoned(v, text) for k, v in value.items()}
    if isinstance(value, list):
        return [_poisoned(v, text) for v in value]
    return value


def _app(tmp_path: Path) -> tuple[FastAPI, dict[str, str]]:
    app = make_app(tmp_path / "fuzz")
    add_user(app, "ada", "admin")
    add_user(app, "rita", "researcher")
    return app, bearer(app, "ada")


def test_no_server_errors_anywhere_in_the_schema(tmp_path: Path) -> None:
    app, headers = _app(tmp_path)
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    results = list(schema.get_all_operations())
    invalid = [r.err() for r in results if isinstance(r, Err)]
    assert invalid == []  # the schema itself is valid
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    documented = sum(len(ops) for ops in app.openapi()["paths"].values())
    assert len(operations) == documented >= 30
    server_errors: list[str] = []
    calls = poisoned = 0
    client = TestClient(app, raise_server_exceptions=False)

    for operation in operations:

        @given(case=operation.as_strategy(), lone=st.sampled_from([None, *LONE]))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def exercise(case: Any, lone: str | None) -> None:
            nonlocal calls, poisoned
            if lone is not None and isinstance(case.body, dict | list):
                poisoned += 1  # sent as JSON escapes (ensure_ascii), as a client would
                response = client.request(
                    case.method,
                    case.formatted_path,
                    params=case.query,
                    content=json.dumps(_poisoned(case.body, lone)).encode(),
                    headers={**headers, "Content-Type": "application/json"},
                )
            else:
                response = case.call(headers=headers)
            calls += 1
            if response.status_code >= 500:
                server_errors.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{case.as_curl_command()}"
                )

        exercise()
    assert server_errors == []
    assert calls >= len(operations) and poisoned > 0


def _operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
    ]


def test_unencodable_text_and_deep_nesting_get_a_client_error_on_every_route(
    tmp_path: Path,
) -> None:
    app, headers = _app(tmp_path)
    deep = b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    sent: list[str] = []
    wrong: list[str] = []
    with TestClient(app, raise_server_exceptions=False) as client:
        for method, path, operation in _operations(app):
            url = path
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    url = url.replace("{" + parameter["name"] + "}", NOT_UTF8)
            queries = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            attempts: list[tuple[str, bytes | None]] = [
                (url + "?" + "&".join(f"{q}={NOT_UTF8}" for q in queries), None)
            ]
            if "requestBody" in operation:
                schema = operation["requestBody"]["content"]["application/json"]["schema"]
                fields = _fields(app, schema)
                body = "{" + ", ".join(f'"{f}": "\\udfff"' for f in fields) + "}"
                attempts += [(url, deep), (url, body.encode()), (url, b'{"\\ud800": "\\ud800"}')]
            for target, content in attempts:
                response = client.request(
                    method,
                    target,
                    content=content,
                    headers={**headers, "Content-Type": "application/json"},
                )
                sent.append(f"{method} {target[:60]}")
                media = response.headers.get("content-type", "")
                if response.status_code >= 500 or (
                    response.status_code >= 400 and not media.startswith("application/json")
                ):
                    got = response.status_code
                    wrong.append(f"{method} {target[:80]} {content!r:.60} -> {got}")
    assert wrong == []
    assert len(sent) >= 60


def _fields(app: FastAPI, schema: dict[str, Any]) -> list[str]:
    """The property names of a request body's schema (through its ``$ref``)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = app.openapi()["components"]["schemas"][name]
    return list(schema.get("properties", {})) or ["x"]
