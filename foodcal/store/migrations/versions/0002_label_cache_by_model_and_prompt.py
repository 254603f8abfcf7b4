"""label cache keyed by image, model and prompt version

Revision ID: 0002
Revises: 0001

Rows from 0001 were keyed by the image alone. Each keeps its answer, keyed by the model that
answered it (the only model it records) and prompt version 1 (the prompt did not change before
this revision). OpenAI names a dated snapshot when it answers (`gpt-4o-mini-2024-07-18`), so such a
row is not reused for `OPENAI_MODEL=gpt-4o-mini`: paid once more, never served for another model.
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS = "image_sha256, created_at, outcome, label, model, hits"


def _cache_table(name: str, key: tuple[str, ...], with_prompt_version: bool) -> None:
    columns = [
        sa.Column("image_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("label", sa.JSON(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
    ]
    if with_prompt_version:
        columns.insert(2, sa.Column("prompt_version", sa.Integer(), nullable=False))
    op.create_table(name, *columns, sa.PrimaryKeyConstraint(*key, name=f"{name}_pkey"))


def upgrade() -> None:
    _cache_table("label_cache_v2", ("image_sha256", "model", "prompt_version"), with_prompt_version=True)
    op.execute(
        f"INSERT INTO label_cache_v2 ({_COLUMNS}, prompt_version) SELECT {_COLUMNS}, 1 FROM label_cache"
    )
    op.drop_table("label_cache")
    op.rename_table("label_cache_v2", "label_cache")


def downgrade() -> None:
    # One row per image again: the newest answer wins (what a sha256-only cache would have held).
    _cache_table("label_cache_v1", ("image_sha256",), with_prompt_version=False)
    op.execute(
        f"INSERT INTO label_cache_v1 ({_COLUMNS}) SELECT {_COLUMNS} FROM label_cache AS c "
        "WHERE NOT EXISTS (SELECT 1 FROM label_cache AS n WHERE n.image_sha256 = c.image_sha256 "
        "AND (n.created_at > c.created_at OR (n.created_at = c.created_at AND n.model > c.model) "
        "OR (n.created_at = c.created_at AND n.model = c.model AND n.prompt_version > c.prompt_version)))"
    )
    op.drop_table("label_cache")
    op.rename_table("label_cache_v1", "label_cache")
