"""Leases: a role that one server of several sharing a database holds at a time.

A holder takes a free or expired lease, or renews its own, by one conditional write; the
others see it taken until it expires. Two servers asking at once cannot both get it: the
update is conditional on the lease being free or theirs, and the first insert of a name is
guarded by its primary key.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from redfl.platform.models import Lease, utcnow


class LeaseStore:
    """The lease part of :class:`~redfl.platform.store.Store` (needs ``self.session``)."""

    session: Session

    def hold_lease(self, name: str, holder: str, seconds: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` for ``seconds``; whether
        ``holder`` holds it now."""
        now = utcnow()
        until = now + timedelta(seconds=seconds)
        taken = self.session.execute(
            update(Lease)
            .where(Lease.name == name, (Lease.holder == holder) | (Lease.expires_at < now))
            .values(holder=holder, expires_at=until)
            .execution_options(synchronize_session=False)
        )
        self.session.commit()
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            return True
        try:
            self.session.execute(insert(Lease).values(name=name, holder=holder, expires_at=until))
            self.session.commit()
        except IntegrityError:  # someone holds it (or took it first)
            self.session.rollback()
            return False
        return True

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up if ``holder`` holds it (another server may take it at once)."""
        self.session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))
        self.session.commit()
