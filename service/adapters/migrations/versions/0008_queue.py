"""Quotas and the fair queue (``service.core.queue``): the jobs' admission time, queue position
and reason, the admins' per-owner quotas, and the one row that serializes admission passes.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # batch: SQLite cannot alter in place
        batch.add_column(sa.Column("admitted_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("queue_position", sa.Integer))
        batch.add_column(sa.Column("queue_reason", sa.Text))
    op.create_table(
        "owner_quotas",
        sa.Column("owner", sa.String(128), primary_key=True),
        sa.Column("max_running", sa.Integer),
        sa.Column("max_queued", sa.Integer),
        sa.Column("cpus", sa.Float),
        sa.Column("gpus", sa.Float),
        sa.Column("memory_gb", sa.Float),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    lock = op.create_table("queue_lock", sa.Column("id", sa.Integer, primary_key=True),
                           sa.Column("passes", sa.Integer, nullable=False))
    op.bulk_insert(lock, [{"id": 1, "passes": 0}])


def downgrade() -> None:
    op.drop_table("queue_lock")
    op.drop_table("owner_quotas")
    with op.batch_alter_table("jobs") as batch:
        for name in ("queue_reason", "queue_position", "admitted_at"):
            batch.drop_column(name)
