"""sample owners, shared rate-limit buckets, AnalyzeMeal request ids

Revision ID: 0004
Revises: 0003

Samples stored before this revision have no owner: only admins see them.
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.add_column(sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch.create_index("ix_samples_owner", ["owner"])
    op.create_table(
        "rate_limits",
        sa.Column("identity", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("tat", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("identity"),
    )
    op.create_table(
        "analyze_requests",
        sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("request_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("request_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("claimed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("sample_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("owner", "request_id"),
    )
    op.create_index("ix_analyze_requests_created_at", "analyze_requests", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_analyze_requests_created_at", table_name="analyze_requests")
    op.drop_table("analyze_requests")
    op.drop_table("rate_limits")
    with op.batch_alter_table("samples") as batch:
        batch.drop_index("ix_samples_owner")
        batch.drop_column("owner")
