"""Users, refresh tokens (and their families), revoked token ids and login attempts.

User names are unique ignoring case (``Alice`` is the user ``alice``): a name is looked up by
its :func:`~redfl.platform.models.name_key`, and a login attempt is stored under it, so a
name's failures count alike however it is spelt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from redfl.platform.models import (
    ROLES,
    LoginAttempt,
    RefreshToken,
    RevokedToken,
    User,
    name_key,
    utcnow,
)
from redfl.platform.store.errors import Conflict, NotFound, commit_or_conflict

FAILED_LOGIN_REASONS = ("bad password", "unknown user")
"""The reasons of failed attempts that count towards the login limits (a refused attempt of
a limited caller, reason ``rate limited``, does not)."""


@dataclass(frozen=True)
class SpentToken:
    """What a valid refresh token gave when spent: its user and its family."""

    user: User
    family: str


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role: must be one of {list(ROLES)}, got {role!r}")


class UserStore:
    """The user half of :class:`~redfl.platform.store.Store` (needs ``self.session``)."""

    session: Session

    def create_user(self, name: str, role: str, password_hash: str) -> User:
        """Add a user; a name taken, in any case, is a :class:`Conflict`."""
        _check_role(role)
        taken = self.user_by_name(name)
        if taken is not None:
            same = "" if taken.name == name else f" (as {taken.name!r})"
            raise Conflict(f"user {name!r} already exists{same}")
        user = User(name=name, name_key=name_key(name), role=role, password_hash=password_hash)
        self.session.add(user)
        commit_or_conflict(self.session, f"user {name!r} already exists")
        return user

    def get_user(self, user_id: int) -> User | None:
        """The user with ``user_id``, or ``None``."""
        return self.session.get(User, user_id)

    def user_by_name(self, name: str) -> User | None:
        """The user called ``name`` (in any case), or ``None``."""
        query = select(User).where(User.name_key == name_key(name))
        return self.session.scalars(query).one_or_none()

    def require_user(self, name: str) -> User:
        """The user called ``name``; a :class:`NotFound` if there is none."""
        user = self.user_by_name(name)
        if user is None:
            raise NotFound(f"user {name!r} does not exist")
        return user

    def list_users(self) -> list[User]:
        """Every user, by name."""
        return list(self.session.scalars(select(User).order_by(User.name)))

    def count_admins(self) -> int:
        """How many admins there are."""
        query = select(func.count()).select_from(User).where(User.role == "admin")
        return int(self.session.scalar(query) or 0)

    def set_role(self, name: str, role: str) -> User:
        """Change a user's role; demoting the last admin is a :class:`Conflict`."""
        _check_role(role)
        user = self.require_user(name)
        if user.role == "admin" and role != "admin" and self.count_admins() == 1:
            raise Conflict(f"user {name!r} is the last admin")
        user.role = role
        self.session.commit()
        return user

    def set_password_hash(self, name: str, password_hash: str, end_sessions: bool = True) -> User:
        """Replace a user's password hash and, unless told not to (the same password hashed
        anew), end their sessions: every token family of theirs revoked, refresh and access
        tokens alike."""
        user = self.require_user(name)
        user.password_hash = password_hash
        self.session.commit()
        if end_sessions:
            self._revoke_all(user.id)
        return user

    def delete_user(self, name: str) -> None:
        """Delete a user (their runs stay, without owner); the last admin is kept."""
        user = self.require_user(name)
        if user.role == "admin" and self.count_admins() == 1:
            raise Conflict(f"user {name!r} is the last admin")
        self.session.delete(user)
        self.session.commit()

    def add_refresh_token(
        self, user_id: int, token_hash: str, expires_at: datetime, family: str
    ) -> None:
        """Store a refresh token's digest, valid until ``expires_at``, in ``family``."""
        self.session.add(
            RefreshToken(
                user_id=user_id, token_hash=token_hash, expires_at=expires_at, family=family
            )
        )
        self.session.commit()

    def use_refresh_token(self, token_hash: str) -> SpentToken | None:
        """Spend a refresh token: its user and family if it was valid and unused, else
        ``None``.

        The token is revoked by one conditional update, so two concurrent uses cannot both
        succeed. A token that was spent (or revoked) already and is used again revokes its
        whole family: whoever holds the newer tokens of that login (a thief, or the user)
        must log in again.
        """
        now = utcnow()
        token = self.session.scalars(
            select(RefreshToken).where(RefreshToken.token_hash == token_hash)
        ).one_or_none()
        if token is None:
            return None
        spent = self.session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.id == token.id,
                RefreshToken.revoked_at.is_(None),
                RefreshToken.expires_at > now,
            )
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
        self.session.commit()
        if spent.rowcount == 1:  # type: ignore[attr-defined]
            user = self.get_user(token.user_id)
            return None if user is None else SpentToken(user, token.family)
        if token.revoked_at is not None:  # reused: the family is compromised
            self.revoke_family(token.family)
        return None

    def revoke_refresh_token(self, token_hash: str) -> str | None:
        """Revoke a refresh token and its whole family; the family, or ``None`` for an
        unknown token."""
        family = self.session.scalar(
            select(RefreshToken.family).where(RefreshToken.token_hash == token_hash)
        )
        if family is None:
            return None
        self.revoke_family(family)
        return str(family)

    def revoke_family(self, family: str) -> None:
        """Revoke every refresh token of ``family`` and deny the family's access tokens
        until the last of its refresh tokens would have expired."""
        self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.family == family, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        last = self.session.scalar(
            select(func.max(RefreshToken.expires_at)).where(RefreshToken.family == family)
        )
        self.session.commit()
        if last is not None:
            self.revoke_token_id(family, last)

    def revoke_token_id(self, token_id: str, expires_at: datetime) -> None:
        """Deny the access token id (or token family) ``token_id`` until ``expires_at``
        (revoking one twice keeps the first entry)."""
        try:
            self.session.execute(
                insert(RevokedToken).values(
                    token_id=token_id, expires_at=expires_at, created_at=utcnow()
                )
            )
            self.session.commit()
        except IntegrityError:
            self.session.rollback()

    def revoked_since(self, after_id: int) -> list[tuple[int, str, datetime]]:
        """Revocations stored after row ``after_id``: (row id, token id, expiry), in order."""
        query = (
            select(RevokedToken.id, RevokedToken.token_id, RevokedToken.expires_at)
            .where(RevokedToken.id > after_id)
            .order_by(RevokedToken.id)
        )
        return [(int(i), str(t), e) for i, t, e in self.session.execute(query)]

    def _revoke_all(self, user_id: int) -> None:
        query = select(RefreshToken.family).where(
            RefreshToken.user_id == user_id,
            RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > utcnow(),
        )
        for family in set(self.session.scalars(query)):
            self.revoke_family(family)

    def record_login(self, username: str, address: str, success: bool, reason: str) -> None:
        """Store one login attempt under the name's key (cut to the column's 64 characters)."""
        self.session.add(
            LoginAttempt(
                username=name_key(username)[:64],
                address=address[:64],
                success=success,
                reason=reason,
            )
        )
        self.session.commit()

    def _failures(self, since: datetime, username: str, address: str) -> Select[datetime]:
        query = select(LoginAttempt.created_at).where(
            LoginAttempt.success.is_(False),
            LoginAttempt.reason.in_(FAILED_LOGIN_REASONS),
            LoginAttempt.created_at >= since,
        )
        if username:
            query = query.where(LoginAttempt.username == name_key(username)[:64])
        if address:
            query = query.where(LoginAttempt.address == address[:64])
        return query

    def failure_times(
        self, since: datetime, username: str = "", address: str = "", limit: int = 100
    ) -> list[datetime]:
        """When the counted failed attempts (:data:`FAILED_LOGIN_REASONS`) since ``since``
        of ``username`` and/or from ``address`` were made, newest first (at most ``limit``)."""
        query = self._failures(since, username, address)
        return list(
            self.session.scalars(query.order_by(LoginAttempt.created_at.desc()).limit(limit))
        )

    def failed_logins(self, since: datetime, username: str = "", address: str = "") -> int:
        """How many counted failed attempts since ``since`` for ``username`` and/or from
        ``address``."""
        query = select(func.count()).select_from(
            self._failures(since, username, address).subquery()
        )
        return int(self.session.scalar(query) or 0)

    def prune(self, attempts_before: datetime, expired_before: datetime) -> int:
        """Delete login attempts made before ``attempts_before``, and revocations and
        refresh tokens that expired before ``expired_before``; how many rows went."""
        gone = 0
        for statement in (
            delete(LoginAttempt).where(LoginAttempt.created_at < attempts_before),
            delete(RevokedToken).where(RevokedToken.expires_at < expired_before),
            delete(RefreshToken).where(RefreshToken.expires_at < expired_before),
        ):
            result = self.session.execute(statement.execution_options(synchronize_session=False))
            gone += int(result.rowcount)  # type: ignore[attr-defined]
        self.session.commit()
        return gone

    def login_attempts(self, limit: int = 100) -> list[LoginAttempt]:
        """The latest login attempts, newest first."""
        query = select(LoginAttempt).order_by(LoginAttempt.id.desc()).limit(limit)
        return list(self.session.scalars(query))
