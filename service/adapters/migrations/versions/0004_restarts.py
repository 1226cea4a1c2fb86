"""Restart policies and the races of the job state machine: the jobs' ``ray_seen_at``,
``restarts``, ``max_restarts`` and ``restarted_at``, and the table of in-flight idempotency
keys.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # batch: SQLite cannot alter in place
        batch.add_column(sa.Column("ray_seen_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("restarts", sa.Integer, nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("max_restarts", sa.Integer, nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("restarted_at", sa.DateTime(timezone=True)))
    op.create_table(
        "job_key_claims",
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner", "idempotency_key", name="pk_job_key_claims"),
    )


def downgrade() -> None:
    op.drop_table("job_key_claims")
    with op.batch_alter_table("jobs") as batch:
        for name in ("restarted_at", "max_restarts", "restarts", "ray_seen_at"):
            batch.drop_column(name)
