"""0011 splits `samples` by job (label_jobs, sample_features, corrections, paired_predictions):
every row and value moves up, and back down, on SQLite and PostgreSQL."""

import json

import pytest
import sqlalchemy
from alembic import command
from alembic.config import Config

from foodcal.store import LabelStatus, Sample
from foodcal.store.db import MIGRATIONS_DIR
from foodcal.store.tables import utcnow
from tests.test_store import migrated_from

PIZZA_ITEMS = [{"name": "crust", "grams": 200.0, "nutrients": [500.0, 15.0, 10.0, 70.0]}]
_COMMON = {"created_at": None, "image_path": "p", "filename": "f.jpg", "width": 640, "height": 480,
           "shown_source": "NUTRITION_SOURCE_CHATGPT", "note": "", "pred_portion_basis": "", "meal_id": "",
           "label_attempts": 0, "label_error": "", "label_cached": False, "label_policy_reason": "",
           "label_uncertainty": 0.0, "label_dish": "", "label_provider": "", "label_model": "",
           "correction_flag": "", "correction_review": "", "classifier_version": "c@1",
           "dishes": [["pizza", 0.9]], "top1_dish": "pizza"}  # fmt: skip
SAMPLES = {
    "everything": {
        **_COMMON, "image_sha256": "ab" * 32, "owner": "alice", "note": "no cheese", "meal_id": "m1",
        "more_image_sha256s": ["cd" * 32], "embedding": bytes(range(16)), "class_probabilities": b"\x01" * 8,
        "pred_calories_kcal": 600.0, "pred_proteins_g": 25.0, "pred_fats_g": 20.0, "pred_carbs_g": 70.0,
        "pred_model_version": 2, "pred_portion_g": 300.0, "pred_portion_basis": "reference",
        "paired_calories_kcal": 610.0, "paired_proteins_g": 26.0, "paired_fats_g": 21.0,
        "paired_carbs_g": 71.0, "paired_model_version": 3,
        "label_status": "labeled", "label_attempts": 2, "label_error": "timeout: once",
        "label_policy_reason": "explore", "label_uncertainty": 0.4, "label_source": "chatgpt",
        "label_dish": "pizza", "label_portion_g": 310.0, "label_confidence": 0.8,
        "label_provider": "openai", "label_model": "gpt-4o-mini", "label_flags": ["calorie_mismatch"],
        "label_items": PIZZA_ITEMS, "label_calories_kcal": 650.0, "label_proteins_g": 27.0,
        "label_fats_g": 24.0, "label_carbs_g": 80.0, "label_cached": True, "labeled_at": None,
        "correction_calories_kcal": 700.0, "correction_proteins_g": 30.0, "correction_fats_g": 25.0,
        "correction_carbs_g": 82.0, "correction_items": PIZZA_ITEMS, "corrected_at": None,
        "corrected_by": "bob", "correction_flag": "far", "correction_review": "confirmed",
    },
    "pending": {
        **_COMMON, "image_sha256": "ef" * 32, "label_status": "pending", "label_attempts": 1,
        "label_next_attempt_at": None, "label_claimed_until": None, "label_claimed_by": "gw:1",
    },
    "bare": {**_COMMON, "image_sha256": "01" * 32, "label_status": "not_requested", "dishes": []},
}  # fmt: skip
_DATES = {"created_at", "labeled_at", "corrected_at", "label_next_attempt_at", "label_claimed_until"}
_JSON = {"dishes", "more_image_sha256s", "label_flags", "label_items", "correction_items"}


def _insert(sample_id: str, values: dict) -> tuple[str, dict]:
    values = {k: (utcnow() if k in _DATES else json.dumps(v) if k in _JSON else v) for k, v in values.items()}
    columns = ["id", *values]
    sql = f"INSERT INTO samples ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"
    return sql, {"id": sample_id, **values}


def _rows(db) -> dict[str, dict]:
    with db.engine.connect() as connection:
        rows = connection.execute(sqlalchemy.text("SELECT * FROM samples")).mappings().all()

    def parsed(key, value):  # PostgreSQL's driver parses JSON columns itself, SQLite's does not
        return json.loads(value) if key in _JSON and isinstance(value, str) else value

    return {row["id"]: {key: parsed(key, value) for key, value in row.items()} for row in rows}


def test_every_sample_value_moves_to_its_part_and_back(database_url):
    from foodcal.store import Database

    before_db = Database(database_url)
    before_db.migrate("0010")
    with before_db.engine.begin() as connection:
        for sample_id, values in SAMPLES.items():
            sql, row = _insert(sample_id, values)
            connection.execute(sqlalchemy.text(sql), row)
    before = _rows(before_db)
    before_db.dispose()

    db = migrated_from(database_url, "0010")  # already holds the rows: migrated to the head
    with db.session() as session:
        full = session.get(Sample, "everything")
        job, features, correction = full.label_job, full.features, full.correction
        assert (job.status, job.attempts, job.error, job.policy_reason, job.cached) == (
            LabelStatus.LABELED, 2, "timeout: once", "explore", True)  # fmt: skip
        assert full.values("label") == (650.0, 27.0, 24.0, 80.0) and job.label.flags == ("calorie_mismatch",)
        assert full.values("paired") == (610.0, 26.0, 21.0, 71.0) and full.paired.model_version == 3
        assert full.values("correction") == (700.0, 30.0, 25.0, 82.0) and correction.items == PIZZA_ITEMS
        assert (correction.corrected_by, correction.flag, correction.review) == ("bob", "far", "confirmed")
        assert (features.embedding, features.classifier_version) == (bytes(range(16)), "c@1")
        assert (full.dishes, features.top1_dish) == ([["pizza", 0.9]], "pizza")
        assert (full.owner, full.meal_id, full.more_image_sha256s) == ("alice", "m1", ["cd" * 32])
        pending = session.get(Sample, "pending")
        assert (pending.label_job.claimed_by, pending.correction, pending.paired) == ("gw:1", None, None)
        assert session.get(Sample, "bare").label_job.status == LabelStatus.NOT_REQUESTED
    with db.engine.connect() as connection:
        count = {
            table: connection.execute(sqlalchemy.text(f"SELECT count(*) FROM {table}")).scalar()
            for table in ("label_jobs", "sample_features", "corrections", "paired_predictions")
        }
    assert count == {"label_jobs": 3, "sample_features": 3, "corrections": 1, "paired_predictions": 1}

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0010")
    assert _rows(db) == before  # every column of every row, as it was
    db.dispose()


def test_a_new_sample_has_its_label_job_and_features_and_refuses_a_column_that_moved():
    sample = Sample(image_sha256="ab" * 32, image_path="p")
    assert sample.label_job.status == LabelStatus.NOT_REQUESTED and sample.features.embedding is None
    assert sample.label_job.sample_id == sample.features.sample_id == sample.id
    assert (sample.correction, sample.paired) == (None, None)
    with pytest.raises(TypeError, match="label_status"):
        Sample(image_sha256="ab" * 32, image_path="p", label_status=LabelStatus.PENDING)
