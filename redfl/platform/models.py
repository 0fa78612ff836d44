"""The platform's tables (SQLAlchemy 2, typed ``Mapped[...]`` columns).

The schema itself is created by the Alembic migrations shipped in
``redfl/platform/migrations``; these classes describe the same tables for queries.
Times are stored as UTC and read back timezone-aware on every backend.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

ROLES = ("admin", "researcher", "viewer")
"""The user roles, from most to least privileged."""

RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "stopped")
"""A run's life: queued, then running, then one of the four final statuses (``cancelled``:
ended at a round boundary when asked; ``stopped``: ended at once, mid-round, by a force-stop
or its wall-clock limit)."""

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "stopped"})
"""Statuses a run never leaves."""


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and read back as aware UTC (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware time to naive UTC before storing it."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC to a stored time."""
        return None if value is None else value.replace(tzinfo=UTC)

    def result_processor(
        self, dialect: Dialect, coltype: object
    ) -> Callable[[Any], datetime | None] | None:
        """On SQLite (times stored as ISO text) one parse to aware UTC per value; elsewhere the
        dialect's processor, then :meth:`process_result_value`."""
        if dialect.name == "sqlite":
            return _sqlite_utc
        return super().result_processor(dialect, coltype)


def _sqlite_utc(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint names, the same in the migrations (so they compare equal)."""


class Base(DeclarativeBase):
    """Declarative base of the platform's tables."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}  # noqa: RUF012


project_members = Table(
    "project_members",
    Base.metadata,
    Column("project_id", ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
)


def name_key(name: str) -> str:
    """The form of a user name that must be unique: ``Alice`` and ``alice`` are one user."""
    return name.casefold()


class User(Base):
    """A person who logs in: unique name (unique case-insensitively, by ``name_key``), role
    and argon2 password hash."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    name_key: Mapped[str] = mapped_column(String(64), index=True, unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RefreshToken(Base):
    """A refresh token, stored as its SHA-256 digest only; single use.

    The tokens of one login form a ``family`` (each refresh spends one and issues the next):
    a spent token used again revokes the whole family.
    """

    __tablename__ = "refresh_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class RevokedToken(Base):
    """A revoked access token id (``jti``) or token family, refused until ``expires_at``
    (when every token it covers has expired anyway)."""

    __tablename__ = "revoked_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_id: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Project(Base):
    """A named group of runs with an owner and members."""

    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    members: Mapped[list[User]] = relationship(
        secondary=project_members, lazy="selectin", order_by="User.name"
    )
    owner: Mapped[User | None] = relationship(lazy="joined")


run_tags = Table(
    "run_tags",
    Base.metadata,
    Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(32), primary_key=True, index=True),
)


class Run(Base):
    """One run: its config (text and format), owner, status, times and run folder; what
    the list shows of its rounds (how many, best and last accuracy), kept up to date as
    rounds are stored; its tags; and when any of that last changed (``updated_at``, what
    the live run list follows)."""

    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), index=True
    )
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    config_text: Mapped[str] = mapped_column(Text)
    config_format: Mapped[str] = mapped_column(String(8))
    rounds: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    run_dir: Mapped[str] = mapped_column(Text)
    job_id: Mapped[str | None] = mapped_column(String(128))
    rounds_done: Mapped[int] = mapped_column(Integer, default=0)
    best_accuracy: Mapped[float | None]
    final_accuracy: Mapped[float | None]
    owner: Mapped[User | None] = relationship(lazy="joined")
    project: Mapped[Project | None] = relationship(lazy="joined")


class _OfRun:
    """The keys of a row that belongs to a run: its own id, and the run's (deleted with it)."""

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))


class RoundMetric(_OfRun, Base):
    """The record of one finished round of a run (the JSON of a ``RoundRecord``)."""

    __tablename__ = "round_metrics"
    __table_args__ = (UniqueConstraint("run_id", "round"),)
    round: Mapped[int]
    record: Mapped[dict[str, Any]]


class Failure(_OfRun, Base):
    """A client failure of a run: node, round, phase and reason."""

    __tablename__ = "failures"
    __table_args__ = (Index("ix_failures_run_id", "run_id"),)
    round: Mapped[int]
    node: Mapped[str] = mapped_column(String(255))
    phase: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)


class Event(_OfRun, Base):
    """An event of a run's stream, numbered by ``seq`` from 0 (replayed to late subscribers)."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("run_id", "seq"),)
    seq: Mapped[int]
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoginAttempt(Base):
    """One login attempt (for the audit trail and the rate limit)."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_username_created_at", "username", "created_at"),
        Index("ix_login_attempts_address_created_at", "address", "created_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    success: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Lease(Base):
    """A named role that one server of several holds at a time (``executor``: the one that
    dispatches queued runs), until ``expires_at`` unless its ``holder`` renews it."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime]


DEPLOYMENT_STATUSES = ("deploying", "running", "failed", "lost")
"""A served model's life: ``deploying`` until Ray Serve runs its replicas, then
``running``; ``failed`` when deploying failed; ``lost`` when Ray Serve no longer had it and
deploying it again failed too (it is redeployed on a restart of the server otherwise)."""


class Deployment(Base):
    """A run's model served on Ray Serve: its application name there, who deployed it, its
    replicas and batching, its status and the last error. A run has at most one."""

    __tablename__ = "deployments"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), unique=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16))
    replicas: Mapped[int] = mapped_column(Integer)
    max_batch: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    owner: Mapped[User | None] = relationship(lazy="joined")


EDGE_ACTIONS = ("submit", "abort")
"""What a user of the platform did to an edge job."""


class EdgeAction(Base):
    """A user's action on an edge job through the platform (who submitted or aborted which
    job of which edge deployment, when, and the job's name or the reason given)."""

    __tablename__ = "edge_actions"
    __table_args__ = (Index("ix_edge_actions_deployment_job_id", "deployment", "job_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    deployment: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    user_name: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
