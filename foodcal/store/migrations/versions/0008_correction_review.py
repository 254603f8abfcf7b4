"""corrections as the truth: who corrected, why a correction is flagged, an admin's review

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.add_column(sa.Column("corrected_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch.add_column(
            sa.Column("correction_flag", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column(
                "correction_review",
                sqlmodel.sql.sqltypes.AutoString(length=20),
                nullable=False,
                server_default="",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.drop_column("correction_review")
        batch.drop_column("correction_flag")
        batch.drop_column("corrected_by")
