"""Users recently read from the store, so an authenticated request need not read them again.

An access token proves who sent a request, but not that the user still exists or still has
the role they had: the user is read from the store. That read used to happen on every
request; :class:`KnownUsers` keeps each user's row for ``seconds`` after it was read.

The bound: a change made through this server's API (a role change, a deletion) clears the
cache at once, so it takes effect on the next request; a change made elsewhere (``redfl
users`` on the command line, another server on the same database) takes effect within
``seconds`` (the ``user_cache_seconds`` setting; 0 reads the store on every request).

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

from redfl.platform.models import User

MAX_USERS = 10_000
"""How many users the cache holds; past that it starts again empty."""


class KnownUsers:
    """User rows by id, each trusted for ``seconds`` after it was read from the store.

    The cached rows are detached ORM objects shared between requests: read them, never add
    them to a session or change them.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._users: dict[int, tuple[float, User]] = {}
        self._lock = threading.Lock()
        self._generation = 0

    def get(self, user_id: int) -> User | None:
        """The user read less than ``seconds`` ago, or ``None`` (read the store)."""
        entry = self._users.get(user_id)
        if entry is None or self._clock() - entry[0] >= self.seconds:
            return None
        return entry[1]

    def generation(self) -> int:
        """A number that changes whenever the cache is cleared (see :meth:`put`)."""
        return self._generation

    def put(self, user: User, read_at: float | None = None, generation: int | None = None) -> None:
        """Remember ``user`` as read at ``read_at`` (default: now).

        With ``generation`` (what :meth:`generation` said before the read), a row read before
        a :meth:`clear` is not stored: it may predate the change that cleared the cache.
        """
        if self.seconds <= 0:
            return
        stamp = self._clock() if read_at is None else read_at
        with self._lock:
            if generation is not None and generation != self._generation:
                return
            if len(self._users) >= MAX_USERS:
                self._users.clear()
            self._users[user.id] = (stamp, user)

    def clear(self) -> None:
        """Forget every user (after a change to users through the API)."""
        with self._lock:
            self._generation += 1
            self._users.clear()

    def clock(self) -> float:
        """The cache's clock (seconds, monotonic)."""
        return self._clock()
