"""one owner per table: samples split by job into label_jobs, sample_features, corrections and
paired_predictions; every row and value moves, and moves back on downgrade

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_TEXT, _DATE = sqlmodel.sql.sqltypes.AutoString, sqlmodel.sql.sqltypes.UTCDateTime
_NUTRIENTS = ("calories_kcal", "proteins_g", "fats_g", "carbs_g")


def _column(name: str, kind, default=None) -> sa.Column:
    """NOT NULL when it has a default (the default fills rows added on downgrade)."""
    return sa.Column(name, kind, nullable=default is None, server_default=default)


# table -> ([(its column, the samples column it came from, type, server default when moved back)],
#           which samples get a row)
_PARTS = {
    "label_jobs": (
        [
            ("status", "label_status", _TEXT(length=20), "not_requested"),
            ("policy_reason", "label_policy_reason", _TEXT(), ""),
            ("uncertainty", "label_uncertainty", sa.Float(), "0"),
            ("attempts", "label_attempts", sa.Integer(), "0"),
            ("next_attempt_at", "label_next_attempt_at", _DATE(), None),
            ("claimed_until", "label_claimed_until", _DATE(), None),
            ("claimed_by", "label_claimed_by", _TEXT(), None),
            ("error", "label_error", _TEXT(), ""),
            ("label_source", "label_source", _TEXT(length=20), None),
            ("label_dish", "label_dish", _TEXT(), ""),
            ("label_portion_g", "label_portion_g", sa.Float(), None),
            ("label_confidence", "label_confidence", sa.Float(), None),
            ("label_provider", "label_provider", _TEXT(), ""),
            ("label_model", "label_model", _TEXT(), ""),
            ("label_flags", "label_flags", sa.JSON(), None),
            ("label_items", "label_items", sa.JSON(), None),
            *((f"label_{n}", f"label_{n}", sa.Float(), None) for n in _NUTRIENTS),
            ("cached", "label_cached", sa.Boolean(), sa.false()),
            ("labeled_at", "labeled_at", _DATE(), None),
        ],
        "1 = 1",  # every sample has a label job
    ),
    "sample_features": (
        [
            ("classifier_version", "classifier_version", _TEXT(), ""),
            ("dishes", "dishes", sa.JSON(), "[]"),
            ("top1_dish", "top1_dish", _TEXT(length=100), ""),
            ("embedding", "embedding", sa.LargeBinary(), None),
            ("class_probabilities", "class_probabilities", sa.LargeBinary(), None),
        ],
        "1 = 1",
    ),
    "corrections": (
        [
            *((n, f"correction_{n}", sa.Float(), None) for n in _NUTRIENTS),
            ("items", "correction_items", sa.JSON(), None),
            ("corrected_at", "corrected_at", _DATE(), None),
            ("corrected_by", "corrected_by", _TEXT(length=64), None),
            ("flag", "correction_flag", _TEXT(), ""),
            ("review", "correction_review", _TEXT(length=20), ""),
        ],
        "corrected_at IS NOT NULL OR correction_calories_kcal IS NOT NULL OR correction_items IS NOT NULL"
        " OR correction_flag <> '' OR correction_review <> ''",
    ),
    "paired_predictions": (
        [
            ("model_version", "paired_model_version", sa.Integer(), None),
            *((n, f"paired_{n}", sa.Float(), None) for n in _NUTRIENTS),
        ],
        "paired_model_version IS NOT NULL OR paired_calories_kcal IS NOT NULL",
    ),
}
# indexes: (table, column) of the old samples index and the new one
_INDEXES = [("label_jobs", "status", "label_status"), ("label_jobs", "next_attempt_at", "label_next_attempt_at"),
            ("sample_features", "classifier_version", "classifier_version"),
            ("sample_features", "top1_dish", "top1_dish")]  # fmt: skip


def upgrade() -> None:
    for table, (columns, which) in _PARTS.items():
        op.create_table(
            table,
            sa.Column("sample_id", _TEXT(length=32), nullable=False),
            *(sa.Column(new, kind, nullable=default is None) for new, _, kind, default in columns),
            sa.ForeignKeyConstraint(["sample_id"], ["samples.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("sample_id"),
        )
        new, old = ", ".join(c[0] for c in columns), ", ".join(c[1] for c in columns)
        op.execute(f"INSERT INTO {table} (sample_id, {new}) SELECT id, {old} FROM samples WHERE {which}")
    for table, new, old in _INDEXES:
        op.create_index(f"ix_{table}_{new}", table, [new])
    with op.batch_alter_table("samples") as batch:
        for _, _, old in _INDEXES:
            batch.drop_index(f"ix_samples_{old}")
        for columns, _ in _PARTS.values():
            for _, old, _, _ in columns:
                batch.drop_column(old)


def downgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        for columns, _ in _PARTS.values():
            for _, old, kind, default in columns:
                batch.add_column(_column(old, kind, default))
        for _, _, old in _INDEXES:
            batch.create_index(f"ix_samples_{old}", [old])
    for table, (columns, _) in _PARTS.items():
        new, old = ", ".join(c[0] for c in columns), ", ".join(c[1] for c in columns)
        mine = f"FROM {table} WHERE {table}.sample_id = samples.id"
        op.execute(f"UPDATE samples SET ({old}) = (SELECT {new} {mine}) WHERE EXISTS (SELECT 1 {mine})")
    for table, new, _ in reversed(_INDEXES):
        op.drop_index(f"ix_{table}_{new}", table_name=table)
    for table in reversed(_PARTS):
        op.drop_table(table)
