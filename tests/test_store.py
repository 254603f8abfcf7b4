import json
import os
import time

import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlmodel import select

from foodcal.store import ImageStore, LabelJob, LabelStatus, Sample, SampleCorrection, SampleFeatures
from foodcal.store.db import MIGRATIONS_DIR
from foodcal.store.images import INCOMING_MAX_AGE_S
from foodcal.store.tables import set_nutrients, utcnow
from tests.conftest import photo

HEAD = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def test_migrations_create_every_table_on_an_empty_database(db):
    tables = set(sqlalchemy.inspect(db.engine).get_table_names())
    assert {
        "samples",
        "label_cache",
        "chatgpt_calls",
        "training_runs",
        "model_versions",
        "alembic_version",
    } <= tables
    db.migrate()  # applying again is a no-op
    with db.engine.connect() as connection:
        assert connection.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar() == HEAD


def test_tables_and_migrations_describe_the_same_schema(db):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == []


def migrated_from(database_url: str, revision: str, *rows: tuple[str, dict]):
    """A database at an older `revision`, with rows inserted as that schema takes them (raw SQL),
    then migrated to the head: what an upgrade does to existing data."""
    from foodcal.store import Database

    db = Database(database_url)
    db.migrate(revision)
    with db.engine.begin() as connection:
        for statement, values in rows:
            connection.execute(sqlalchemy.text(statement), values)
    db.migrate()
    return db


def test_label_cache_rows_from_before_the_model_key_survive_keyed_by_their_model(database_url):
    """0002 keys the cache by (image, model, prompt version); a 0001 row keeps its answer."""
    from foodcal.store import LabelCache

    label = {"source": "chatgpt", "dish": "pizza", "model": "gpt-4o-mini", "nutrients": [650, 27, 24, 80]}
    db = migrated_from(
        database_url,
        "0001",
        (
            "INSERT INTO label_cache (image_sha256, created_at, outcome, label, model, hits) "
            "VALUES (:sha, :created, 'labeled', :label, 'gpt-4o-mini', 3)",
            {"sha": "ab" * 32, "created": utcnow(), "label": json.dumps(label)},
        ),
    )
    with db.session() as session:
        (row,) = session.exec(select(LabelCache)).all()
        assert (row.image_sha256, row.model, row.prompt_version) == ("ab" * 32, "gpt-4o-mini", 1)
        assert (row.outcome, row.label, row.hits) == ("labeled", label, 3)
        assert session.get(LabelCache, ("ab" * 32, "gpt-4o-mini", 1, "")) is not None  # no note: ""
        session.add(LabelCache(image_sha256="ab" * 32, model="gpt-5-mini", prompt_version=1, outcome="x"))
    with db.session() as session:  # the same photo under another model is another row
        assert len(session.exec(select(LabelCache)).all()) == 2
    db.dispose()


def test_sample_round_trip_keeps_every_field(db):
    embedding = bytes(range(192))
    sample = Sample(
        image_sha256="ab" * 32,
        image_path="uploads/images/ab/ab/x",
        features=SampleFeatures(
            dishes=[["pizza", 0.7], ["lasagna", 0.1]],
            embedding=embedding,
            class_probabilities=b"\x00" * 404,
            classifier_version="demo@1",
        ),
        pred_model_version=0,
        label_job=LabelJob(status=LabelStatus.LABELED),
    )
    sample.set_prediction((500.0, 20.0, 18.0, 60.0))
    set_nutrients(sample.label_job, "label", (450.0, 22.0, 15.0, 58.0))
    with db.session() as session:
        session.add(sample)
    with db.session() as session:
        loaded = session.get(Sample, sample.id)
    assert loaded.features.embedding == embedding
    assert loaded.dishes == [["pizza", 0.7], ["lasagna", 0.1]]
    assert loaded.difference == (50.0, -2.0, 3.0, 2.0)
    assert loaded.training_target == (450.0, 22.0, 15.0, 58.0)
    assert loaded.created_at.tzinfo is not None
    loaded.correction = SampleCorrection()
    set_nutrients(loaded.correction, "", (400.0, 20.0, 14.0, 50.0))
    assert loaded.training_target == (400.0, 20.0, 14.0, 50.0)  # a person's correction wins


def test_same_photo_twice_is_one_file_and_one_sha(tmp_path):
    store = ImageStore(tmp_path)
    first, second = store.put(photo()), store.put(photo())
    other = store.put(photo(color=(10, 20, 30)))
    assert first.sha256 == second.sha256 and first.path == second.path
    assert not first.already_stored and second.already_stored
    assert other.sha256 != first.sha256
    assert len([p for p in (tmp_path / "images").rglob("*") if p.is_file()]) == 2
    assert store.get(first.sha256) == photo()


def test_a_staged_photo_is_under_its_name_only_once_published(tmp_path):
    """Staged while the model runs, published once it has answered, discarded if it did not."""
    store = ImageStore(tmp_path)

    def files():
        return sorted(p.name for p in tmp_path.rglob("*") if p.is_file())

    staged = store.stage(photo())
    assert not store.path_for(staged.sha256).exists() and len(files()) == 1  # written, not yet named
    stored = staged.publish()
    assert not stored.already_stored and files() == [stored.sha256] and store.get(stored.sha256) == photo()
    staged.discard()  # after publishing: the photo stays
    assert files() == [stored.sha256]
    assert store.stage(photo()).publish().already_stored and files() == [stored.sha256]
    store.stage(photo(color=(10, 20, 30))).discard()
    assert files() == [stored.sha256]


def test_photos_a_crash_left_staged_are_swept_once_old_and_writes_in_progress_are_not(tmp_path):
    """A gateway killed between staging and publishing leaves a staged photo under no name; the
    next start sweeps it (one directory, not the whole tree), but never one young enough to be a
    write in progress (another gateway on the same directory)."""
    store = ImageStore(tmp_path)
    left = store.stage(photo())  # the process "dies" here: never published nor discarded
    in_progress = store.stage(photo(color=(10, 20, 30)))
    published = store.put(photo(color=(40, 50, 60)))
    hour_ago = time.time() - INCOMING_MAX_AGE_S - 60
    os.utime(left.incoming, (hour_ago, hour_ago))
    assert store.sweep_incoming() == 1
    assert not left.incoming.exists() and in_progress.incoming.exists()
    assert store.get(published.sha256) == photo(color=(40, 50, 60))  # published photos are never touched
    assert in_progress.publish().path == str(store.path_for(in_progress.sha256))
    assert ImageStore(tmp_path / "never-used").sweep_incoming() == 0  # nothing written yet: nothing to do


def test_image_paths_come_only_from_sha256_names(tmp_path):
    store = ImageStore(tmp_path)
    for bad in ("../../etc/passwd", "a" * 63, "G" * 64, "/abs/path"):
        try:
            store.path_for(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted as an image name")


def test_samples_from_before_0003_get_their_top1_dish_and_versions_a_calibration_column(database_url):
    """0003: the label policy counts labels per top-1 dish, including samples stored before it."""
    from foodcal.store import ModelVersionRow, Sample

    db = migrated_from(
        database_url,
        "0002",
        (
            "INSERT INTO samples (id, created_at, image_sha256, image_path, filename, width, height, "
            "classifier_version, dishes, shown_source, label_status, label_attempts, label_error, "
            "label_cached) VALUES ('s1', :created, :sha, 'p', '', 0, 0, 'c', :dishes, '', 'labeled', "
            "0, '', :cached)",
            {"created": utcnow(), "sha": "cd" * 32, "dishes": json.dumps([["pizza", 0.9], ["lasagna", 0.05]]),
             "cached": False},
        ),
    )  # fmt: skip
    with db.session() as session:
        sample = session.get(Sample, "s1")
        assert (sample.features.top1_dish, sample.label_job.policy_reason) == ("pizza", "")
        session.add(ModelVersionRow(version=7, calibration={"level": 0.8, "samples": 40}))
    with db.session() as session:
        assert session.get(ModelVersionRow, 7).calibration == {"level": 0.8, "samples": 40}
    db.dispose()


def test_samples_and_cached_answers_from_before_0005_have_no_note_and_keep_their_answers(database_url):
    """0005 keys the label cache by note too; older answers were asked without one."""
    from foodcal.store import LabelCache, Sample

    label = {"source": "chatgpt", "dish": "pizza", "model": "gpt-4o-mini", "nutrients": [650, 27, 24, 80]}
    db = migrated_from(
        database_url,
        "0004",
        (
            "INSERT INTO label_cache (image_sha256, created_at, outcome, label, model, prompt_version, "
            "hits) VALUES (:sha, :created, 'labeled', :label, 'gpt-4o-mini', 1, 2)",
            {"sha": "ef" * 32, "created": utcnow(), "label": json.dumps(label)},
        ),
        (
            "INSERT INTO samples (id, created_at, image_sha256, image_path, filename, width, height, "
            "classifier_version, dishes, shown_source, label_status, label_attempts, label_error, "
            "label_cached, top1_dish, label_policy_reason) VALUES ('s1', :created, :sha, 'p', '', 0, 0, "
            "'c', '[]', '', 'labeled', 0, '', :cached, '', '')",
            {"created": utcnow(), "sha": "ef" * 32, "cached": False},
        ),
    )
    with db.session() as session:
        row = session.get(LabelCache, ("ef" * 32, "gpt-4o-mini", 1, ""))
        assert (row.label, row.hits) == (label, 2)
        session.add(LabelCache(image_sha256="ef" * 32, model="gpt-4o-mini", prompt_version=1,
                               note_sha256="ab" * 32, outcome="labeled"))  # fmt: skip
        sample = session.get(Sample, "s1")
        assert (sample.note, sample.pred_portion_g, sample.correction) == ("", None, None)
    with db.session() as session:  # the same photo with a note is another row
        assert len(session.exec(select(LabelCache)).all()) == 2
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with db.engine.begin() as connection:  # down: the noted answer cannot be keyed without its note
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")
    with db.engine.connect() as connection:
        assert connection.execute(sqlalchemy.text("SELECT count(*) FROM label_cache")).scalar() == 1
    db.dispose()
