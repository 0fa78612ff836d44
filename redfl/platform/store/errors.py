"""Errors of the store: a missing row, or a write that conflicts with what is stored; and
the two ways a store method meets them."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

Row = TypeVar("Row")


class StoreError(ValueError):
    """Base class of the store's errors; the message names the object and the value."""


class NotFound(StoreError):
    """The named user, project or run does not exist."""


class Conflict(StoreError):
    """The write conflicts with stored data (a taken name, a finished run, ...)."""


def require_row(session: Session, model: type[Row], key: Any, what: str) -> Row:
    """The ``model`` row with primary key ``key``; a :class:`NotFound` saying ``what`` does
    not exist if there is none."""
    row = session.get(model, key)
    if row is None:
        raise NotFound(f"{what} does not exist")
    return row


def commit_or_conflict(session: Session, message: str) -> None:
    """Commit ``session``; a write that breaks a unique constraint is rolled back and raised
    as a :class:`Conflict` with ``message``."""
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(message) from None
