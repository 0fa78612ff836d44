"""Revoked access tokens: the ids (``jti``) and login families refused before they expire.

A logout, a reused refresh token or a new password revokes a token family in the store
(``revoked_tokens``). Every request checks its token against :class:`RevokedTokens`, an
in-memory copy of that table: a revocation made through this server applies at once (it is
added here as it is stored); one made through another server on the same database applies
when this one next reads the table, every ``poll_seconds`` (the ``revocation_poll_seconds``
setting). An entry is forgotten once the tokens it covers have expired.

Examples
--------
>>> from datetime import UTC, datetime, timedelta
>>> from redfl.platform.security import AccessClaims
>>> revoked = RevokedTokens()
>>> later = datetime.now(UTC) + timedelta(minutes=5)
>>> revoked.add("fam-1", later)
>>> revoked.refuses(AccessClaims(7, "ada", "admin", later, token_id="t-9", family="fam-1"))
True
>>> revoked.refuses(AccessClaims(7, "ada", "admin", later, token_id="t-9", family="fam-2"))
False
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from redfl.platform.security import AccessClaims
from redfl.platform.store import Store

LOG = logging.getLogger("redfl.platform")


class RevokedTokens:
    """Token ids and families refused until their expiry (Unix seconds)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._last_row = 0
        self._lock = threading.Lock()

    def add(self, token_id: str, expires: datetime) -> None:
        """Refuse ``token_id`` (a token's ``jti`` or a family) until ``expires``."""
        with self._lock:
            self._until[token_id] = expires.timestamp()

    def refuses(self, claims: AccessClaims) -> bool:
        """Whether the token with ``claims`` (its id or its family) was revoked."""
        until = self._until  # read without the lock: a dict lookup is atomic
        return claims.token_id in until or claims.family in until

    def load(self, sessions: sessionmaker[Session]) -> int:
        """Read the revocations stored since the last read, forget expired ones; how many
        were new."""
        with sessions() as session:
            rows = Store(session).revoked_since(self._last_row)
        now = time.time()
        with self._lock:
            for row_id, token_id, expires in rows:
                self._until[token_id] = expires.timestamp()
                self._last_row = max(self._last_row, row_id)
            for token_id in [t for t, until in self._until.items() if until < now]:
                del self._until[token_id]
        return len(rows)

    async def follow(self, sessions: sessionmaker[Session], poll_seconds: float) -> None:
        """:meth:`load` every ``poll_seconds`` until cancelled."""
        while True:
            await asyncio.sleep(poll_seconds)
            try:
                await asyncio.to_thread(self.load, sessions)
            except Exception:  # a database hiccup must not end the task
                LOG.exception("revocations not read", extra={"event": "revocations_error"})
