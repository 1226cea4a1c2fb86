"""The MLflow experiment of a job's run, so that a job's link opens MLflow's run page
(``#/experiments/<id>/runs/<run id>``) without asking MLflow on a read.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # batch: SQLite cannot alter in place
        batch.add_column(sa.Column("mlflow_experiment_id", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("mlflow_experiment_id")
