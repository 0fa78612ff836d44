"""Edge jobs: the table ``edge_actions`` (who submitted or aborted which edge job through
the platform).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the table and its index."""
    op.create_table(
        "edge_actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_edge_actions_user_id", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_edge_actions"),
    )
    op.create_index("ix_edge_actions_deployment_job_id", "edge_actions", ["deployment", "job_id"])


def downgrade() -> None:
    """Drop the table (the edge servers keep their jobs)."""
    op.drop_index("ix_edge_actions_deployment_job_id", table_name="edge_actions")
    op.drop_table("edge_actions")
