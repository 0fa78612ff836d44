"""Errors of the store: a missing row, or a write that conflicts with what is stored."""

from __future__ import annotations


class StoreError(ValueError):
    """Base class of the store's errors; the message names the object and the value."""


class NotFound(StoreError):
    """The named user, project or run does not exist."""


class Conflict(StoreError):
    """The write conflicts with stored data (a taken name, a finished run, ...)."""
