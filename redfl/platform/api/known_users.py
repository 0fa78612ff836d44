"""Users recently read from the store, so an authenticated request need not read them again.

An access token proves who sent a request, but not that the user still exists or still has
the role they had: the user is read from the store, and :class:`KnownUsers` keeps each row
for ``seconds`` after it was stored (a :class:`cachetools.TTLCache`).

The bound: a change made through this server's API (a role change, a deletion) clears the
cache at once, so it takes effect on the next request; a change made elsewhere (``redfl
users`` on the command line, another server on the same database) takes effect within
``seconds`` (the ``user_cache_seconds`` setting; 0 reads the store on every request), plus
the few milliseconds of the read that stored the row.

Examples
--------
>>> from redfl.platform.models import User
>>> now = [0.0]
>>> known = KnownUsers(seconds=5, clock=lambda: now[0])
>>> known.put(User(id=7, name="ada", role="admin"))
>>> known.get(7).role
'admin'
>>> now[0] = 5.0
>>> known.get(7) is None
True
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cachetools import TTLCache

from redfl.platform.models import User

MAX_USERS = 10_000
"""How many users the cache holds; past that the least recently used make room."""


class KnownUsers:
    """User rows by id, each trusted for ``seconds`` after it was stored.

    The cached rows are detached ORM objects shared between requests: read them, never add
    them to a session or change them. The event loop reads and the request threads write,
    so every access holds a lock (a :class:`~cachetools.TTLCache` is not thread-safe).
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._users: TTLCache[int, User] = TTLCache(MAX_USERS, seconds, timer=clock)
        self._lock = threading.Lock()
        self._generation = 0

    def get(self, user_id: int) -> User | None:
        """The user stored less than ``seconds`` ago, or ``None`` (read the store)."""
        with self._lock:
            return self._users.get(user_id)

    def generation(self) -> int:
        """A number that changes whenever the cache is cleared (see :meth:`put`)."""
        return self._generation

    def put(self, user: User, generation: int | None = None) -> None:
        """Remember ``user`` from now on.

        With ``generation`` (what :meth:`generation` said before the read), a row read before
        a :meth:`clear` is not stored: it may predate the change that cleared the cache.
        """
        if self.seconds <= 0:
            return
        with self._lock:
            if generation is None or generation == self._generation:
                self._users[user.id] = user

    def clear(self) -> None:
        """Forget every user (after a change to users through the API)."""
        with self._lock:
            self._generation += 1
            self._users.clear()
