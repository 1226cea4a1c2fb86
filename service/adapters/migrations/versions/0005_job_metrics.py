"""The jobs' latest MLflow metrics, as the reconciler last read them: a job read answers from
the row instead of asking MLflow on every request.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"  # alembic reads branch_labels and depends_on only if set


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # batch: SQLite cannot alter in place
        batch.add_column(sa.Column("metrics", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("metrics")
