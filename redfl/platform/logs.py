"""Structured logs: one JSON object per line, with the id of the request being served.

Log with ``LOG.info("message", extra={"event": "...", ...})``; the extra keys become fields.
Passwords and tokens are never passed to the logger.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

LOG = logging.getLogger("redfl.platform")
REQUEST_ID: ContextVar[str | None] = ContextVar("redfl_request_id", default=None)
"""The id of the HTTP request being served (set by the request-id middleware)."""

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line: time, level, logger, message, request id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object on one line."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """Send the platform's logs as JSON lines to ``stream`` (default stderr), once."""
    if any(isinstance(h.formatter, JsonFormatter) for h in LOG.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    LOG.addHandler(handler)
    LOG.setLevel(level)
    LOG.propagate = False
