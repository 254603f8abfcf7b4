"""a meal of several plates, a plate from several angles: samples.meal_id, samples.more_image_sha256s

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.add_column(
            sa.Column("meal_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("more_image_sha256s", sa.JSON(), nullable=True))
        batch.create_index("ix_samples_meal_id", ["owner", "meal_id"])


def downgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.drop_index("ix_samples_meal_id")
        batch.drop_column("more_image_sha256s")
        batch.drop_column("meal_id")
