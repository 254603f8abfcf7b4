"""One label type (foodcal/domain/labels.py): its protobuf and JSON forms, its one status enum, and the
0006 migration that moved a sample's label JSON into the label_* columns."""

import enum
import json

import pytest
import sqlalchemy
from alembic import command
from alembic.config import Config

from foodcal.domain.convert import mirrors_proto_enum
from foodcal.domain.items import FoodItem
from foodcal.domain.labels import Label, LabelSource, LabelStatus
from foodcal.store import RunStatus, Sample
from foodcal.store.db import MIGRATIONS_DIR
from foodcal.store.tables import utcnow
from foodcal.v1 import common_pb2
from tests.test_store import migrated_from

PIZZA = Label(
    source=LabelSource.CHATGPT,
    dish="pizza",
    portion_g=300.0,
    nutrients=(650.0, 27.0, 24.0, 80.0),
    confidence=0.8,
    provider="openai",
    model="gpt-4o-mini",
    flags=("calorie_mismatch",),
    items=(
        FoodItem("crust", 200.0, (500.0, 15.0, 10.0, 70.0)),
        FoodItem("cheese", 100.0, (150.0, 12.0, 14.0, 10.0)),
    ),
)


def test_a_label_survives_its_proto_json_and_sample_forms():
    assert Label.from_proto(PIZZA.to_proto()) == PIZZA
    assert Label.from_json(json.loads(json.dumps(PIZZA.to_json()))) == PIZZA
    sample = Sample(image_sha256="a" * 64, image_path="x", label_status=LabelStatus.LABELED)
    sample.set_label(PIZZA)
    assert sample.label == PIZZA and sample.values("label") == PIZZA.nutrients
    sample.set_label(None)
    assert sample.label is None and sample.values("label") is None


def test_a_rejected_label_has_no_numbers_in_any_form():
    rejected = Label(LabelSource.CHATGPT, "", 0.0, None, 0.0, "openai", "m", rejection_reason="refused: no")
    assert rejected.rejected and not rejected.to_proto().HasField("nutrition")
    assert Label.from_json(rejected.to_json()) == rejected
    assert Label.from_proto(rejected.to_proto(), "refused: no") == rejected


def test_older_cache_entries_are_read_as_labels():
    """The cache's JSON from before 0006 (LabelResult.to_json) is read as it is, without a migration."""
    old = {"source": "reference", "dish": "pizza", "model": "reference-table", "nutrients": [650, 27, 24, 80],
           "rejected": False, "provider": "foodcal", "confidence": 0.5}  # fmt: skip
    label = Label.from_json(old)
    assert (label.source, label.nutrients, label.rejected) == (
        LabelSource.REFERENCE,
        (650, 27, 24, 80),
        False,
    )


@pytest.mark.parametrize(("ours", "theirs", "prefix"), [
    (LabelStatus, common_pb2.LabelStatus, "LABEL_STATUS_"),
    (RunStatus, common_pb2.TrainingRunStatus, "TRAINING_RUN_STATUS_"),
])  # fmt: skip
def test_each_status_maps_to_its_proto_value_and_back(ours, theirs, prefix):
    numbers = [value.number for value in theirs.DESCRIPTOR.values if value.number != 0]
    assert sorted(ours(member).to_proto() for member in ours) == sorted(numbers)
    assert {ours.from_proto(number).to_proto() for number in numbers} == set(numbers)
    with pytest.raises(ValueError):
        ours.from_proto(0)  # UNSPECIFIED is no status


def test_an_enum_that_drifts_from_its_proto_fails_on_import():
    with pytest.raises(TypeError, match="LABELED"):

        @mirrors_proto_enum(common_pb2.LabelStatus, "LABEL_STATUS_")
        class Partial(enum.StrEnum):
            PENDING = "pending"


def _old_sample(
    sample_id: str, status: str, label: dict | None, nutrients, error: str = ""
) -> tuple[str, dict]:
    return (
        "INSERT INTO samples (id, created_at, image_sha256, image_path, filename, width, height, "
        "classifier_version, dishes, shown_source, label_status, label_attempts, label_error, label_cached, "
        "top1_dish, label_policy_reason, label_uncertainty, note, pred_portion_basis, label, "
        "label_calories_kcal, label_proteins_g, label_fats_g, label_carbs_g) VALUES (:id, :created, "
        ":sha, 'p', '', 0, 0, 'c', '[]', '', :status, 1, :error, :cached, '', '', 0, '', '', :label, "
        ":kcal, :p, :f, :c)",
        {"id": sample_id, "created": utcnow(), "sha": "ab" * 32, "status": status, "error": error,
         "cached": False, "label": json.dumps(label) if label else None,
         **dict(zip(("kcal", "p", "f", "c"), nutrients or (None,) * 4, strict=True))},
    )  # fmt: skip


def _json(value):  # PostgreSQL's driver parses JSON columns itself, SQLite's does not
    return value if value is None or isinstance(value, dict) else json.loads(value)


def test_labels_stored_at_0005_survive_the_move_to_one_shape(database_url):
    old = {"source": "NUTRITION_SOURCE_CHATGPT", "dish": "pizza", "portion_g": 300.0, "confidence": 0.8,
           "provider": "openai", "model": "gpt-4o-mini", "flags": ["calorie_mismatch"], "prompt_tokens": 120,
           "completion_tokens": 40, "cost_usd": 0.0001, "rejection_reason": "",
           "items": [item.to_json() for item in PIZZA.items]}  # fmt: skip
    refused = {**old, "dish": "", "portion_g": 0.0, "confidence": 0.0, "flags": [], "items": [],
               "rejection_reason": "refused: no"}  # fmt: skip
    reference = {
        **old,
        "source": "NUTRITION_SOURCE_REFERENCE",
        "provider": "foodcal",
        "flags": [],
        "items": [],
    }
    db = migrated_from(
        database_url,
        "0005",
        _old_sample("labeled", "labeled", old, PIZZA.nutrients),
        _old_sample("refused", "rejected", refused, None, "refused: no"),
        _old_sample("reference", "reference_only", reference, None),
        _old_sample("pending", "pending", None, None),
    )
    with db.session() as session:
        assert session.get(Sample, "labeled").label == PIZZA
        got = session.get(Sample, "refused").label
        assert (got.source, got.rejection_reason, got.nutrients, got.model) == (
            LabelSource.CHATGPT, "refused: no", None, "gpt-4o-mini")  # fmt: skip
        got = session.get(Sample, "reference").label
        assert (got.source, got.dish, got.nutrients) == (LabelSource.REFERENCE, "pizza", None)
        assert session.get(Sample, "pending").label is None
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with db.engine.begin() as connection:  # down again: the JSON is rebuilt from the columns
        config.attributes["connection"] = connection
        command.downgrade(config, "0005")
    with db.engine.connect() as connection:
        rows = dict(connection.execute(sqlalchemy.text("SELECT id, label FROM samples")).all())
    back = _json(rows["labeled"])
    assert {k: back[k] for k in ("source", "dish", "portion_g", "flags", "items")} == {
        k: old[k] for k in ("source", "dish", "portion_g", "flags", "items")
    }
    assert _json(rows["refused"])["rejection_reason"] == "refused: no" and rows["pending"] is None
    db.dispose()
