"""Refusals of the device routes (and of the server's ``/sync``): 400 and 401, never a 500.

A body that fails validation is answered with 400, status ``INVALID_REQUEST`` and a one-line
reason naming the field (not FastAPI's 422); so is a body that parses but is unusable
(:class:`InvalidRequest`). A caller that cannot be identified (a missing, bad or expired token,
say) is answered with 401, status ``ERROR`` and the reason (:class:`Unauthorized`).
"""

from __future__ import annotations

from pydantic import ValidationError

from redfl.edge.protocol import ErrorReply, Status

__all__ = ["InvalidRequest", "Unauthorized", "describe", "error_body"]


class InvalidRequest(ValueError):
    """A request whose body parsed but whose content is unusable (answered with 400)."""


class Unauthorized(ValueError):
    """A request whose caller is not identified (answered with 401); the message is why."""


def describe(exc: ValidationError) -> str:
    """One line: the location and message of each of the first five errors.

    >>> from redfl.edge.protocol import JobRequest
    >>> try:
    ...     JobRequest.model_validate_json('{"job_name": ""}')
    ... except ValidationError as exc:
    ...     print(describe(exc))
    job_name: String should have at least 1 character
    """
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request body"


def error_body(status: Status, reason: str) -> bytes:
    """The JSON body of a refusal: ``{"status": ..., "reason": ...}``."""
    return ErrorReply(status=status, reason=reason).model_dump_json().encode()
