"""The run tracker: case-insensitive user names, token families and revocations, run tags,
the list's round figures, force-stop, leases.

- ``users.name_key``: the case-folded name, unique (``Alice`` beside ``alice`` is refused);
  an existing database holding two such names is refused by this migration, naming them.
- ``refresh_tokens.family`` and the table ``revoked_tokens`` (access token ids and token
  families refused until they expire).
- ``runs``: ``rounds_done``, ``best_accuracy``, ``final_accuracy`` (filled from the stored
  rounds), ``updated_at``, ``stop_requested``; the table ``run_tags``.
- the table ``leases`` (which server of several dispatches queued runs).

Columns are added with constant defaults and then filled, never by recreating a table (on
SQLite, recreating ``runs`` with foreign keys on would delete its rounds and events).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

EPOCH = "1970-01-01 00:00:00"


def _duplicate_names(connection: sa.Connection) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for (name,) in connection.execute(sa.text("SELECT name FROM users ORDER BY name")):
        groups.setdefault(str(name).casefold(), []).append(str(name))
    return [names for names in groups.values() if len(names) > 1]


def _fill_users(connection: sa.Connection) -> None:
    clash = _duplicate_names(connection)
    if clash:
        raise RuntimeError(
            "user names must be unique ignoring case; rename or delete one of each of "
            f"{clash} (redfl users) before upgrading"
        )
    users = sa.table("users", sa.column("id", sa.Integer), sa.column("name_key", sa.String))
    for user_id, name in connection.execute(sa.text("SELECT id, name FROM users")):
        connection.execute(
            users.update().where(users.c.id == user_id).values(name_key=str(name).casefold())
        )


def _fill_runs(connection: sa.Connection) -> None:
    runs = sa.table(
        "runs",
        sa.column("id", sa.String),
        sa.column("rounds_done", sa.Integer),
        sa.column("best_accuracy", sa.Double),
        sa.column("final_accuracy", sa.Double),
        sa.column("updated_at", sa.DateTime),
        sa.column("created_at", sa.DateTime),
        sa.column("started_at", sa.DateTime),
        sa.column("finished_at", sa.DateTime),
    )
    connection.execute(
        runs.update().values(
            updated_at=sa.func.coalesce(runs.c.finished_at, runs.c.started_at, runs.c.created_at)
        )
    )
    metrics = sa.table(
        "round_metrics",
        sa.column("run_id", sa.String),
        sa.column("round", sa.Integer),
        sa.column("record", sa.JSON),
    )
    found: dict[str, list[Any]] = {}
    query = sa.select(metrics.c.run_id, metrics.c.record).order_by(
        metrics.c.run_id, metrics.c.round
    )
    for run_id, record in connection.execute(query):
        found.setdefault(run_id, []).append((record or {}).get("accuracy"))
    for run_id, accuracies in found.items():
        known = [float(a) for a in accuracies if a is not None]
        connection.execute(
            runs.update()
            .where(runs.c.id == run_id)
            .values(
                rounds_done=len(accuracies),
                best_accuracy=max(known) if known else None,
                final_accuracy=None if accuracies[-1] is None else float(accuracies[-1]),
            )
        )


def upgrade() -> None:
    """Add the columns and tables, and fill the new columns from what is stored."""
    connection = op.get_bind()
    op.add_column("users", sa.Column("name_key", sa.String(64), nullable=False, server_default=""))
    _fill_users(connection)
    op.create_index("ix_users_name_key", "users", ["name_key"], unique=True)
    op.add_column(
        "refresh_tokens",
        sa.Column("family", sa.String(32), nullable=False, server_default=""),
    )
    op.execute("UPDATE refresh_tokens SET family = substr(token_hash, 1, 32)")
    op.create_index("ix_refresh_tokens_family", "refresh_tokens", ["family"])
    op.create_table(
        "revoked_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_revoked_tokens"),
        sa.UniqueConstraint("token_id", name="uq_revoked_tokens_token_id"),
    )
    op.create_index("ix_revoked_tokens_expires_at", "revoked_tokens", ["expires_at"])
    for column in (
        sa.Column("stop_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.DateTime(), nullable=False, server_default=EPOCH),
        sa.Column("rounds_done", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("best_accuracy", sa.Double(), nullable=True),
        sa.Column("final_accuracy", sa.Double(), nullable=True),
    ):
        op.add_column("runs", column)
    _fill_runs(connection)
    op.create_index("ix_runs_updated_at", "runs", ["updated_at"])
    op.create_table(
        "run_tags",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("tag", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_run_tags_run_id", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "tag", name="pk_run_tags"),
    )
    op.create_index("ix_run_tags_tag", "run_tags", ["tag"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )


def downgrade() -> None:
    """Drop what :func:`upgrade` added (runs that ended ``stopped`` read as ``cancelled``)."""
    op.execute("UPDATE runs SET status = 'cancelled' WHERE status = 'stopped'")
    op.drop_table("leases")
    op.drop_table("run_tags")
    op.drop_index("ix_runs_updated_at", table_name="runs")
    for name in ("final_accuracy", "best_accuracy", "rounds_done", "updated_at", "stop_requested"):
        op.drop_column("runs", name)
    op.drop_table("revoked_tokens")
    op.drop_index("ix_refresh_tokens_family", table_name="refresh_tokens")
    op.drop_column("refresh_tokens", "family")
    op.drop_index("ix_users_name_key", table_name="users")
    op.drop_column("users", "name_key")
