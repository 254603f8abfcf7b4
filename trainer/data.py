"""Training data: cached classifier features and the best label of each sample."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from sqlmodel import col, func, or_, select

from foodcal.store import Database, LabelStatus, Sample

# Stable split by a hash of the photo (its sha256), not of the sample: two uploads of one photo
# have the same features and the same cached label, and on both sides they would flatter a candidate.
VALIDATION_PERCENT = 20  # versions are compared here; training never sees these, not even to stop
EARLY_STOPPING_PERCENT = 10  # taken from the training side: picks the best epoch
# The quality test set (trainer/quality.py): the last buckets, never trained on, never used to
# stop or to compare in a run, so every version is scored on the same photos for as long as they
# exist. A constant on purpose: raising it would move photos some version was trained on into the
# test set. Every corrected sample belongs to the test set too, whatever its bucket.
TEST_PERCENT = 10


def _bucket(image_sha256: str) -> int:
    return int(hashlib.sha256(image_sha256.encode()).hexdigest()[:8], 16) % 100


def _is_validation_bucket(bucket):
    return bucket < VALIDATION_PERCENT


def _is_early_stopping_bucket(bucket):
    return (bucket >= VALIDATION_PERCENT) & (bucket < VALIDATION_PERCENT + EARLY_STOPPING_PERCENT)


def _is_test_bucket(bucket):
    return bucket >= 100 - TEST_PERCENT


def is_validation(image_sha256: str) -> bool:
    return bool(_is_validation_bucket(_bucket(image_sha256)))


def is_early_stopping(image_sha256: str) -> bool:
    return bool(_is_early_stopping_bucket(_bucket(image_sha256)))


def in_test_set(image_sha256: str, corrected: bool = False) -> bool:
    """The quality test set: the last TEST_PERCENT buckets, plus every sample a person corrected."""
    return corrected or bool(_is_test_bucket(_bucket(image_sha256)))


class Split(NamedTuple):
    train: Dataset  # fits the weights
    early_stopping: Dataset  # its loss is the per-epoch "Val Loss" and picks the best checkpoint
    validation: Dataset  # held out: the deploy decision compares versions on it


@dataclass
class Dataset:
    ids: list[str]
    embeddings: np.ndarray  # [n, embedding_dim] float32
    probabilities: np.ndarray  # [n, 101] float32
    targets: np.ndarray  # [n, 4] float32: a person's correction, else ChatGPT's label
    image_sha256: list[str]  # decides the split: one photo is always on one side
    corrected: np.ndarray | None = None  # [n] bool: a person corrected it (test set only); None = none

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, mask: np.ndarray) -> Dataset:
        return Dataset(
            [i for i, keep in zip(self.ids, mask, strict=True) if keep],
            self.embeddings[mask],
            self.probabilities[mask],
            self.targets[mask],
            [h for h, keep in zip(self.image_sha256, mask, strict=True) if keep],
            None if self.corrected is None else self.corrected[mask],
        )

    def split(self) -> Split:
        # Choosing the best epoch on the samples that then judge it would flatter the candidate:
        # on pure-noise labels that bias alone got a lucky epoch deployed in 1 run of 10.
        buckets = np.array([_bucket(h) for h in self.image_sha256], dtype=np.int64)  # one hash each
        validation, early_stopping = _is_validation_bucket(buckets), _is_early_stopping_bucket(buckets)
        # The quality test set is on no side: not trained on, not stopped on, not compared on.
        test = _is_test_bucket(buckets)
        if self.corrected is not None:
            test = test | self.corrected
        return Split(
            self.subset(~validation & ~early_stopping & ~test),
            self.subset(early_stopping & ~test),
            self.subset(validation & ~test),
        )


def count_labelled(db: Database) -> int:
    """Samples that may teach the model (any classifier version): ChatGPT labels or corrections."""
    with db.session() as session:
        return session.exec(select(func.count()).select_from(Sample).where(_labelled())).one()


def _labelled():
    return or_(Sample.label_status == LabelStatus.LABELED, col(Sample.corrected_at).is_not(None))


def load_dataset(db: Database, classifier_version: str) -> Dataset:
    """Samples whose cached embedding came from `classifier_version`; REFERENCE labels never count."""
    with db.session() as session:
        rows = session.exec(
            select(Sample)
            .where(_labelled(), Sample.classifier_version == classifier_version)
            .where(col(Sample.embedding).is_not(None))
            .order_by(Sample.id)
        ).all()
    rows = [row for row in rows if row.training_target is not None]
    if not rows:
        return Dataset([], np.zeros((0, 0), "f4"), np.zeros((0, 101), "f4"), np.zeros((0, 4), "f4"), [])
    return Dataset(
        ids=[row.id for row in rows],
        embeddings=np.stack([np.frombuffer(row.embedding, "<f4") for row in rows]),
        probabilities=np.stack([np.frombuffer(row.class_probabilities, "<f4") for row in rows]),
        targets=np.asarray([row.training_target for row in rows], dtype=np.float32),
        image_sha256=[row.image_sha256 for row in rows],
        corrected=np.array([row.corrected_at is not None for row in rows], dtype=bool),
    )
