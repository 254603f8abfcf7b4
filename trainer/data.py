"""Training data: cached classifier features and the best label of each sample."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from sqlmodel import col, or_, select

from foodcal.store import Database, LabelStatus, Sample

VALIDATION_PERCENT = 20


def is_validation(sample_id: str) -> bool:
    """Stable split: a sample stays on the same side across runs, so versions compare fairly."""
    return int(hashlib.sha256(sample_id.encode()).hexdigest()[:8], 16) % 100 < VALIDATION_PERCENT


@dataclass
class Dataset:
    ids: list[str]
    embeddings: np.ndarray  # [n, embedding_dim] float32
    probabilities: np.ndarray  # [n, 101] float32
    targets: np.ndarray  # [n, 4] float32: a person's correction, else ChatGPT's label

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, mask: np.ndarray) -> Dataset:
        return Dataset(
            [i for i, keep in zip(self.ids, mask, strict=True) if keep],
            self.embeddings[mask],
            self.probabilities[mask],
            self.targets[mask],
        )

    def split(self) -> tuple[Dataset, Dataset]:
        validation = np.array([is_validation(i) for i in self.ids], dtype=bool)
        return self.subset(~validation), self.subset(validation)


def count_labelled(db: Database) -> int:
    """Samples that may teach the model (any classifier version): ChatGPT labels or corrections."""
    with db.session() as session:
        return len(session.exec(select(Sample.id).where(_labelled())).all())


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
        return Dataset([], np.zeros((0, 0), "f4"), np.zeros((0, 101), "f4"), np.zeros((0, 4), "f4"))
    return Dataset(
        ids=[row.id for row in rows],
        embeddings=np.stack([np.frombuffer(row.embedding, "<f4") for row in rows]),
        probabilities=np.stack([np.frombuffer(row.class_probabilities, "<f4") for row in rows]),
        targets=np.asarray([row.training_target for row in rows], dtype=np.float32),
    )
