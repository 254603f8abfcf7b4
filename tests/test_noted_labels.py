"""The rule for noted labels (trainer/noted_labels.py): a note that moved the label far from what
the photo alone gave never trains the photo-only head."""

import pytest

from foodcal.store import LabelJob, Sample, SampleFeatures
from foodcal.store.tables import set_nutrients
from trainer.noted_labels import NOTE_MAX_FACTOR, may_train


def sample(note="", label_g=250.0, label_kcal=650.0, pred_g=250.0, pred_kcal=650.0) -> Sample:
    return Sample(
        image_sha256="0" * 64,
        image_path="unused",
        note=note,
        label_job=LabelJob(label_portion_g=label_g, label_calories_kcal=label_kcal),
        pred_portion_g=pred_g,
        pred_calories_kcal=pred_kcal,
    )


def test_a_label_without_a_note_always_trains():
    assert may_train(sample(label_g=1000.0, label_kcal=2600.0))  # far from the prediction: still
    assert may_train(sample(note="   ", label_g=1000.0, label_kcal=2600.0))


def test_four_servings_on_a_pizza_photo_does_not_train():
    assert not may_train(sample(note="four servings", label_g=1000.0, label_kcal=2600.0))


@pytest.mark.parametrize(
    ("label_g", "label_kcal"),
    [(250.0, 650.0 * 2), (250.0, 650.0 / 2), (250.0 * 2, 650.0), (0.0, 650.0), (None, 650.0), (250.0, None)],
)
def test_a_note_that_moved_the_portion_or_the_energy_too_far_does_not_train(label_g, label_kcal):
    assert not may_train(sample(note="no cheese, double meat", label_g=label_g, label_kcal=label_kcal))


def test_a_note_that_changed_the_label_within_the_bound_trains():
    assert may_train(sample(note="cooked in butter", label_g=260.0, label_kcal=720.0))
    edge = NOTE_MAX_FACTOR * 0.99
    assert may_train(sample(note="a bit more", label_g=250.0 * edge, label_kcal=650.0 * edge))
    assert may_train(sample(note="a bit less", label_g=250.0 / edge, label_kcal=650.0 / edge))


def test_a_noted_label_without_a_photo_only_prediction_does_not_train():
    assert not may_train(sample(note="two slices", pred_g=None))
    assert not may_train(sample(note="two slices", pred_kcal=None))


def test_the_trainer_leaves_out_noted_labels_that_the_note_moved_far(tmp_path):
    import numpy as np

    from foodcal.store import Database, LabelStatus
    from trainer.data import load_dataset

    db = Database(f"sqlite:///{tmp_path}/noted.db")
    db.migrate()
    notes = {"plain": ("", 2600.0), "near": ("a bit more rice", 700.0), "far": ("four servings", 2600.0)}
    with db.session() as session:
        for name, (note, kcal) in notes.items():
            row = sample(note=note, label_kcal=kcal, label_g=250.0 * kcal / 650.0)
            row.id, row.image_sha256 = name, name * 8
            row.features = SampleFeatures(
                classifier_version="c",
                embedding=np.zeros(4, "<f4").tobytes(),
                class_probabilities=np.full(101, 1 / 101, "<f4").tobytes(),
            )
            row.label_job.status = LabelStatus.LABELED
            set_nutrients(row.label_job, "label", (kcal, 20.0, 20.0, 60.0))
            session.add(row)
    assert sorted(load_dataset(db, "c").ids) == ["near", "plain"]  # the note moved "far" 4x
    db.dispose()
