"""Alembic migrations of the platform's store (run with ``redfl db upgrade``)."""
