"""a sample's label in one shape: label_* columns instead of a JSON copy beside four columns

Revision ID: 0006
Revises: 0005

Each sample's `label` JSON moves into label_source, label_dish, label_portion_g, label_confidence,
label_provider, label_model, label_flags and label_items; its nutrients were already in the four
label_* columns. The JSON's per-sample token counts and cost go: every paid call is in
chatgpt_calls, which GetStats reads. The label cache's JSON is read as it is (Label.from_json).
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_SOURCES = {"NUTRITION_SOURCE_CHATGPT": "chatgpt", "NUTRITION_SOURCE_REFERENCE": "reference"}
_TEXT = ("dish", "provider", "model")
_NEW = ("label_source", *(f"label_{name}" for name in (*_TEXT, "portion_g", "confidence", "flags", "items")))
_JSON = {"label", "label_flags", "label_items"}


def _samples(*columns: str) -> sa.TableClause:
    return sa.table(
        "samples", sa.column("id"), *(sa.column(c, sa.JSON if c in _JSON else None) for c in columns)
    )


def upgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.add_column(
            sa.Column("label_source", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True)
        )
        for name in _TEXT:
            batch.add_column(
                sa.Column(
                    f"label_{name}", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=""
                )
            )
        batch.add_column(sa.Column("label_portion_g", sa.Float(), nullable=True))
        batch.add_column(sa.Column("label_confidence", sa.Float(), nullable=True))
        batch.add_column(sa.Column("label_flags", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("label_items", sa.JSON(), nullable=True))
    connection = op.get_bind()
    old, new = _samples("label"), _samples(*_NEW)
    rows = connection.execute(sa.select(old.c.id, old.c.label).where(old.c.label.is_not(None))).all()
    for sample_id, label in rows:
        if not label:
            continue
        connection.execute(
            new.update()
            .where(new.c.id == sample_id)
            .values(
                label_source=_SOURCES.get(label["source"], label["source"]),
                label_dish=label.get("dish", ""),
                label_provider=label.get("provider", ""),
                label_model=label.get("model", ""),
                label_portion_g=label.get("portion_g"),
                label_confidence=label.get("confidence"),
                label_flags=list(label.get("flags", [])),
                label_items=list(label.get("items", [])),
            )
        )
    with op.batch_alter_table("samples") as batch:
        batch.drop_column("label")


def downgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.add_column(sa.Column("label", sa.JSON(), nullable=True))
    connection = op.get_bind()
    table = _samples("label", "label_status", "label_error", *_NEW)
    sources = {short: full for full, short in _SOURCES.items()}
    for row in connection.execute(sa.select(table).where(table.c.label_source.is_not(None))).mappings().all():
        label = {
            "source": sources.get(row["label_source"], row["label_source"]),
            **{name: row[f"label_{name}"] for name in (*_TEXT, "portion_g", "confidence")},
            "flags": row["label_flags"] or [],
            "items": row["label_items"] or [],
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost_usd": 0.0,
            "rejection_reason": row["label_error"] if row["label_status"] == "rejected" else "",
        }
        connection.execute(table.update().where(table.c.id == row["id"]).values(label=label))
    with op.batch_alter_table("samples") as batch:
        for name in reversed(_NEW):
            batch.drop_column(name)
