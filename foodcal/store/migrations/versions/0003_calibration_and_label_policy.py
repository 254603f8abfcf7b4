"""calibrated ranges per version, the label policy's reason and top-1 dish per sample

Revision ID: 0003
Revises: 0002

Existing samples get their top-1 dish from the stored top-5 (read in Python: JSON functions differ
between SQLite and PostgreSQL), so the label policy counts the labels they already have.
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.add_column(
            sa.Column("top1_dish", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column("label_policy_reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("label_uncertainty", sa.Float(), nullable=False, server_default="0"))
        batch.create_index("ix_samples_top1_dish", ["top1_dish"])
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("calibration", sa.JSON(), nullable=True))
    connection = op.get_bind()
    samples = sa.table("samples", sa.column("id", sa.String), sa.column("dishes", sa.JSON), sa.column("top1_dish", sa.String))
    rows = connection.execute(sa.select(samples.c.id, samples.c.dishes)).all()
    for sample_id, dishes in rows:
        if dishes:
            connection.execute(samples.update().where(samples.c.id == sample_id).values(top1_dish=str(dishes[0][0])[:100]))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("calibration")
    with op.batch_alter_table("samples") as batch:
        batch.drop_index("ix_samples_top1_dish")
        batch.drop_column("label_uncertainty")
        batch.drop_column("label_policy_reason")
        batch.drop_column("top1_dish")
