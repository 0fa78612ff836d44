"""Users, refresh tokens and login attempts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from redfl.platform.models import ROLES, LoginAttempt, RefreshToken, User, utcnow
from redfl.platform.store.errors import Conflict, NotFound, commit_or_conflict


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role: must be one of {list(ROLES)}, got {role!r}")


class UserStore:
    """The user half of :class:`~redfl.platform.store.Store` (needs ``self.session``)."""

    session: Session

    def create_user(self, name: str, role: str, password_hash: str) -> User:
        """Add a user; a taken name is a :class:`Conflict`."""
        _check_role(role)
        user = User(name=name, role=role, password_hash=password_hash)
        self.session.add(user)
        commit_or_conflict(self.session, f"user {name!r} already exists")
        return user

    def get_user(self, user_id: int) -> User | None:
        """The user with ``user_id``, or ``None``."""
        return self.session.get(User, user_id)

    def user_by_name(self, name: str) -> User | None:
        """The user called ``name``, or ``None``."""
        return self.session.scalars(select(User).where(User.name == name)).one_or_none()

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

    def set_password_hash(self, name: str, password_hash: str) -> User:
        """Replace a user's password hash and revoke their refresh tokens."""
        user = self.require_user(name)
        user.password_hash = password_hash
        self._revoke_all(user.id)
        self.session.commit()
        return user

    def delete_user(self, name: str) -> None:
        """Delete a user (their runs stay, without owner); the last admin is kept."""
        user = self.require_user(name)
        if user.role == "admin" and self.count_admins() == 1:
            raise Conflict(f"user {name!r} is the last admin")
        self.session.delete(user)
        self.session.commit()

    def add_refresh_token(self, user_id: int, token_hash: str, expires_at: datetime) -> None:
        """Store a refresh token's digest, valid until ``expires_at``."""
        self.session.add(
            RefreshToken(user_id=user_id, token_hash=token_hash, expires_at=expires_at)
        )
        self.session.commit()

    def use_refresh_token(self, token_hash: str) -> User | None:
        """Spend a refresh token: its user if it was valid and unused, else ``None``.

        The token is revoked by one conditional update, so two concurrent uses cannot both
        succeed.
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
        if spent.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return self.get_user(token.user_id)

    def revoke_refresh_token(self, token_hash: str) -> bool:
        """Revoke a refresh token; whether it existed and was live."""
        done = self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.token_hash == token_hash, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        self.session.commit()
        return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    def _revoke_all(self, user_id: int) -> None:
        self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .execution_options(synchronize_session=False)
        )

    def record_login(self, username: str, address: str, success: bool, reason: str) -> None:
        """Store one login attempt (names are cut to the column's 64 characters)."""
        self.session.add(
            LoginAttempt(
                username=username[:64], address=address[:64], success=success, reason=reason
            )
        )
        self.session.commit()

    def failed_logins(self, since: datetime, username: str = "", address: str = "") -> int:
        """Failed attempts since ``since`` for ``username`` or, if given, ``address``."""
        query = (
            select(func.count())
            .select_from(LoginAttempt)
            .where(LoginAttempt.success.is_(False), LoginAttempt.created_at >= since)
        )
        if username:
            query = query.where(LoginAttempt.username == username[:64])
        if address:
            query = query.where(LoginAttempt.address == address[:64])
        return int(self.session.scalar(query) or 0)

    def login_attempts(self, limit: int = 100) -> list[LoginAttempt]:
        """The latest login attempts, newest first."""
        query = select(LoginAttempt).order_by(LoginAttempt.id.desc()).limit(limit)
        return list(self.session.scalars(query))
