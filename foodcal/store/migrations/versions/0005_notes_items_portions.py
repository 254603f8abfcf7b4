"""the person's note, corrected items and our portion per sample; the label cache keyed by note too

Revision ID: 0005
Revises: 0004

Cached answers from before keep their key with note_sha256 "" (they were asked without a note).
ChatGPT's items live in the sample's `label` JSON, like the rest of its answer.
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLUMNS = "image_sha256, model, prompt_version, created_at, outcome, label, hits"


def _cache_table(name: str, with_note: bool) -> None:
    columns = [
        sa.Column("image_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("prompt_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("label", sa.JSON(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
    ]
    key = ["image_sha256", "model", "prompt_version"]
    if with_note:
        columns.insert(3, sa.Column("note_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False))
        key.append("note_sha256")
    op.create_table(name, *columns, sa.PrimaryKeyConstraint(*key, name=f"{name}_pkey"))


def upgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.add_column(sa.Column("note", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=""))
        batch.add_column(sa.Column("pred_portion_g", sa.Float(), nullable=True))
        batch.add_column(
            sa.Column("pred_portion_basis", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("correction_items", sa.JSON(), nullable=True))
    _cache_table("label_cache_v5", with_note=True)
    op.execute(f"INSERT INTO label_cache_v5 ({_COLUMNS}, note_sha256) SELECT {_COLUMNS}, '' FROM label_cache")
    op.drop_table("label_cache")
    op.rename_table("label_cache_v5", "label_cache")


def downgrade() -> None:
    # Answers to photos with a note cannot be keyed without it: only the unnoted ones are kept.
    _cache_table("label_cache_v4", with_note=False)
    op.execute(f"INSERT INTO label_cache_v4 ({_COLUMNS}) SELECT {_COLUMNS} FROM label_cache WHERE note_sha256 = ''")
    op.drop_table("label_cache")
    op.rename_table("label_cache_v4", "label_cache")
    with op.batch_alter_table("samples") as batch:
        batch.drop_column("correction_items")
        batch.drop_column("pred_portion_basis")
        batch.drop_column("pred_portion_g")
        batch.drop_column("note")
