"""challengers on live traffic: the other version's prediction per sample, and the rollouts table

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NUTRIENTS = ("calories_kcal", "proteins_g", "fats_g", "carbs_g")


def upgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        for nutrient in NUTRIENTS:
            batch.add_column(sa.Column(f"paired_{nutrient}", sa.Float(), nullable=True))
        batch.add_column(sa.Column("paired_model_version", sa.Integer(), nullable=True))
    op.create_table(
        "rollouts",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("baseline_version", sa.Integer(), nullable=False),
        sa.Column("mode", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("split_percent", sa.Float(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("served_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("ended_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("decisions", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="rollouts_pkey"),
    )
    op.create_index("ix_rollouts_version", "rollouts", ["version"])
    op.create_index("ix_rollouts_state", "rollouts", ["state"])


def downgrade() -> None:
    op.drop_table("rollouts")
    with op.batch_alter_table("samples") as batch:
        batch.drop_column("paired_model_version")
        for nutrient in reversed(NUTRIENTS):
            batch.drop_column(f"paired_{nutrient}")
