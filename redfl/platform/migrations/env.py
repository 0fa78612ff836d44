"""Alembic environment: migrate the connection the caller hands over (see ``redfl.platform.db``).

Alembic executes this file; importing it elsewhere (doctest collection) does nothing.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from redfl.platform.models import Base


def _migrate(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    """Run the migrations on the handed-over connection, or on ``sqlalchemy.url``."""
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _migrate(conn)
    engine.dispose()


if getattr(context, "config", None) is not None:
    run()
