"""The platform's error replies: every one is a JSON object whose ``detail`` is one line.

A missing row is 404 and a conflicting write 409 (the store's :class:`NotFound` and
:class:`Conflict`, their message as ``detail``). A 422 also carries ``field``: a config
refused by the web rules names its key (:class:`WebConfigError`); a request that fails
validation is worded by :func:`redfl.core.config.describe_errors`, as a bad config file is,
each bad field by its location (``body.password``, ``query.limit``), and ``field`` is the
first of them.

A validation error never repeats a secret: the value of a password or refresh token, and a
body that is not a JSON object (sent without its JSON content type it arrives as text, with
whatever it holds), are withheld; a long string is named by its length.

Every JSON reply is written by :class:`SafeJSONResponse`: text that cannot be encoded as
UTF-8 (a lone surrogate such as ``"\\ud800"``, sent as a JSON escape and echoed in an error
line) is written as its ``\\uXXXX`` escape, which is valid JSON, instead of failing with a
server error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError
from starlette.exceptions import HTTPException as StarletteHTTPException

from redfl.core.config import SECRET_FIELDS, describe_errors
from redfl.platform.api.schemas import ErrorOut
from redfl.platform.store import Conflict, NotFound
from redfl.platform.untrusted import WebConfigError

SHOWN_CHARACTERS = 100
"""The longest input an error line repeats; a longer one is named by its length."""


class SafeJSONResponse(JSONResponse):
    """A JSON reply whose unencodable characters (lone surrogates) become ``\\uXXXX``
    escapes.

    Examples
    --------
    >>> body = SafeJSONResponse({"detail": chr(0xD800)}).body
    >>> body, json.loads(body) == {"detail": chr(0xD800)}
    (b'{"detail":"\\\\ud800"}', True)
    """

    def render(self, content: Any) -> bytes:
        """``content`` as compact JSON, UTF-8, with unencodable characters escaped."""
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8", "backslashreplace")


class _Withheld:
    """An input an error line does not repeat; its ``repr`` says what it was."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return self.what


def _shown(loc: Sequence[str | int], value: Any) -> Any:
    """What an error line may repeat of the input ``value`` found at ``loc``."""
    if isinstance(value, dict | list):
        return value  # describe_errors names the field without repeating a structure
    whole_body_text = tuple(loc) == ("body",) and isinstance(value, str | bytes)
    if whole_body_text or any(part in SECRET_FIELDS for part in loc):
        return _Withheld("a hidden value")
    if isinstance(value, str) and len(value) > SHOWN_CHARACTERS:
        return _Withheld(f"{len(value)} characters")
    return value


def describe_request(error: RequestValidationError) -> ErrorOut:
    """The 422 reply to a request that failed validation: every bad field in one line and
    the location of the first.

    Examples
    --------
    >>> items = [
    ...     {"type": "string_too_short", "loc": ("body", "password"), "input": "hunter2",
    ...      "msg": "String should have at least 8 characters"},
    ...     {"type": "extra_forbidden", "loc": ("body", "colour"), "input": "red",
    ...      "msg": "Extra inputs are not permitted"},
    ... ]
    >>> reply = describe_request(RequestValidationError(items))
    >>> reply.field
    'body.password'
    >>> for part in reply.detail.split("; "):
    ...     print(part)
    body.password: String should have at least 8 characters (got a hidden value)
    body.colour: unknown key
    """
    items = list(error.errors())
    if not items:
        return ErrorOut(detail="invalid request")
    line_errors = [
        InitErrorDetails(
            type=PydanticCustomError(str(item["type"]), str(item["msg"])),
            loc=tuple(item["loc"]),
            input=_shown(item["loc"], item.get("input")),
        )
        for item in items
    ]
    worded = describe_errors(ValidationError.from_exception_data("request", line_errors))
    return ErrorOut(detail=worded, field=".".join(str(part) for part in items[0]["loc"]))


def _reply(status: int) -> Callable[[Request, Exception], JSONResponse]:
    """A handler answering an exception with ``status`` and its message as ``detail``."""

    def handler(_: Request, error: Exception) -> JSONResponse:
        return SafeJSONResponse({"detail": str(error)}, status_code=status)

    return handler


def _bad_config(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, WebConfigError)
    body = ErrorOut(detail=str(error), field=error.field or None)
    return SafeJSONResponse(body.model_dump(), status_code=422)


def _invalid_request(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return SafeJSONResponse(describe_request(error).model_dump(), status_code=422)


def _http_error(_: Request, error: Exception) -> Response:
    """FastAPI's reply to an :class:`HTTPException`, written safely."""
    assert isinstance(error, StarletteHTTPException)
    headers = getattr(error, "headers", None)
    if error.status_code in (204, 304) or error.status_code < 200:
        return Response(status_code=error.status_code, headers=headers)
    return SafeJSONResponse(
        {"detail": error.detail}, status_code=error.status_code, headers=headers
    )


def install_error_handlers(app: FastAPI) -> None:
    """Answer the store's errors, refused configs and invalid requests as above, and
    document that shape as the 422 reply of every route in the app's OpenAPI schema."""
    app.add_exception_handler(NotFound, _reply(404))
    app.add_exception_handler(Conflict, _reply(409))
    app.add_exception_handler(WebConfigError, _bad_config)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    make_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = make_schema()  # kept as app.openapi_schema: changed in place
        schemas = schema["components"]["schemas"]
        schemas["HTTPValidationError"] = ErrorOut.model_json_schema()  # every 422's $ref
        schemas.pop("ValidationError", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
