"""Stall detection (``service.core.stalls``): when the service last saw a job's progress, how many
progress lines its attempt had printed, when it was marked stalled, and when the service
stopped it for being stalled.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"

COLUMNS = (("progress_at", sa.DateTime(timezone=True)), ("progress_lines", sa.Integer),
           ("stalled_at", sa.DateTime(timezone=True)),
           ("stall_stopped_at", sa.DateTime(timezone=True)))


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # batch: SQLite cannot alter in place
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name, _ in COLUMNS:
            batch.drop_column(name)
