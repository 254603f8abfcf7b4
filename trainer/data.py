"""Training data: cached classifier features, ChatGPT's labels and people's corrections.

Every photo is on one side of a stable split by its hash (two uploads of one photo have the same
features and the same cached label, and on both sides they would flatter a candidate):

  buckets  0-19  validation      versions are compared here (on the truth first, trainer/gate.py)
          20-29  early stopping  picks the best epoch
          30-89  training        fits the weights
          90-99  test            the quality ledger's ChatGPT test set (trainer/quality.py)

Corrections follow their photo's bucket. Those in the training and early-stopping buckets (70%) are
learnt from: as the photo's target, and to learn how ChatGPT's labels differ from the truth
(trainer/teacher_bias.py). Those in the validation and test buckets (30%) are the held-out truth set:
never trained on by any version, ever, so every version and ChatGPT itself are scored on the truth
there. 70/30 because learning the teacher's bias per dish needs most of the few corrections there
are, while 30% of 100 corrections already tells a 10% difference in error apart (trainer/gate.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from foodcal.store import Database, LabelStatus, Sample
from foodcal.store.training_reads import count_teaching, teaching_samples
from trainer.noted_labels import may_train
from trainer.trust import capped_rows, clients, correction_weights, trusted_corrections

VALIDATION_PERCENT = 20  # versions are compared here; training never sees these, not even to stop
EARLY_STOPPING_PERCENT = 10  # taken from the training side: picks the best epoch
# The quality test set (trainer/quality.py): the last buckets, never trained on, never used to
# stop or to compare in a run, so every version is scored on the same photos for as long as they
# exist. A constant on purpose: raising it would move photos some version was trained on into the
# test set.
TEST_PERCENT = 10
TRUTH_PERCENT = VALIDATION_PERCENT + TEST_PERCENT  # corrections held out as the truth set


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


def in_test_set(image_sha256: str) -> bool:
    """The quality ledger's ChatGPT test set: the last TEST_PERCENT buckets."""
    return bool(_is_test_bucket(_bucket(image_sha256)))


def in_truth_set(image_sha256: str) -> bool:
    """Where a correction is held out as the truth: the buckets no version is ever trained on."""
    bucket = _bucket(image_sha256)
    return bool(_is_validation_bucket(bucket) or _is_test_bucket(bucket))


class Split(NamedTuple):
    train: Dataset  # fits the weights
    early_stopping: Dataset  # its loss is the per-epoch "Val Loss" and picks the best checkpoint
    validation: Dataset  # held out: the deploy decision compares versions on ChatGPT's labels here
    truth: Dataset  # held out: corrected photos of the validation and test buckets, their truth


@dataclass
class Dataset:
    ids: list[str]
    embeddings: np.ndarray  # [n, embedding_dim] float32
    probabilities: np.ndarray  # [n, 101] float32
    targets: np.ndarray  # [n, 4] float32: what training fits and comparisons score against
    image_sha256: list[str]  # decides the split: one photo is always on one side
    labels: np.ndarray | None = None  # [n, 4] ChatGPT's, NaN where none; None: `targets` are
    corrections: np.ndarray | None = None  # [n, 4] trusted corrections (trainer/trust.py), NaN where none
    correction_weights: np.ndarray | None = None  # [n] each correction's weight (a client's share)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dishes(self) -> np.ndarray:
        """[n] the classifier's top-1 dish index of each photo."""
        return self.probabilities.argmax(axis=1) if len(self) else np.zeros(0, dtype=np.int64)

    def teacher(self) -> np.ndarray:
        return self.targets if self.labels is None else self.labels

    def truth(self) -> np.ndarray:
        return np.full((len(self), 4), np.nan, "f4") if self.corrections is None else self.corrections

    def has_label(self) -> np.ndarray:
        return ~np.isnan(self.teacher()).any(axis=1)

    def has_correction(self) -> np.ndarray:
        return ~np.isnan(self.truth()).any(axis=1)

    def subset(self, mask: np.ndarray) -> Dataset:
        def rows(array):
            return None if array is None else array[mask]

        return Dataset(
            [i for i, keep in zip(self.ids, mask, strict=True) if keep],
            self.embeddings[mask],
            self.probabilities[mask],
            self.targets[mask],
            [h for h, keep in zip(self.image_sha256, mask, strict=True) if keep],
            rows(self.labels),
            rows(self.corrections),
            rows(self.correction_weights),
        )

    def split(self) -> Split:
        # Choosing the best epoch on the samples that then judge it would flatter the candidate:
        # on pure-noise labels that bias alone got a lucky epoch deployed in 1 run of 10.
        buckets = np.array([_bucket(h) for h in self.image_sha256], dtype=np.int64)  # one hash each
        validation, early_stopping = _is_validation_bucket(buckets), _is_early_stopping_bucket(buckets)
        test = _is_test_bucket(buckets)  # on no side: not trained on, not stopped on, not compared on
        truth = self.subset((validation | test) & self.has_correction())
        return Split(
            self.subset(~validation & ~early_stopping & ~test),
            self.subset(early_stopping),
            self.subset(validation & self.has_label()),
            replace(truth, targets=truth.truth().astype(np.float32)),
        )


def count_labelled(db: Database) -> int:
    """Samples that may teach the model (any classifier version): ChatGPT labels or corrections."""
    return count_teaching(db)


def count_stale(db: Database, classifier_version: str) -> int:
    """Labelled or corrected samples embedded by another classifier: `make backfill` would add them."""
    return count_teaching(db, not_embedded_by=classifier_version)


def one_per_photo(rows: list[Sample]) -> list[Sample]:
    """One photo sent many times counts once: its corrected sample, else its newest label."""
    best: dict[str, Sample] = {}
    for row in rows:  # oldest first: a later one of the same kind wins
        kept = best.get(row.image_sha256)
        if kept is None or row.corrected or not kept.corrected:
            best[row.image_sha256] = row
    return sorted(best.values(), key=lambda row: row.id)


def load_dataset(db: Database, classifier_version: str, max_share_per_client: float = 1.0) -> Dataset:
    """Samples whose cached embedding came from `classifier_version`; REFERENCE labels never count.

    One row per photo; where several clients contribute, none keeps more than its share of the
    rows or of the corrections (trainer/trust.py); untrusted corrections are left out."""
    rows = [
        row
        for row in one_per_photo(teaching_samples(db, classifier_version))
        if row.training_target is not None
    ]
    if not rows:
        return Dataset([], np.zeros((0, 0), "f4"), np.zeros((0, 101), "f4"), np.zeros((0, 4), "f4"), [])
    owners = [row.owner for row in rows]
    keep = capped_rows(owners, [row.image_sha256 for row in rows], max_share_per_client)
    rows = [row for row, kept in zip(rows, keep, strict=True) if kept]
    probabilities = np.stack([np.frombuffer(row.features.class_probabilities, "<f4") for row in rows])
    dishes = probabilities.argmax(axis=1)
    nan = (np.nan,) * 4
    # A label the person's note moved far from what the photo shows never trains the photo-only head.
    labels = np.array(
        [
            row.values("label") or nan
            if row.label_job.status == LabelStatus.LABELED and may_train(row)
            else nan
            for row in rows
        ],
        "f4",
    )
    corrections = np.array([row.values("correction") or nan for row in rows], "f4")
    ok = trusted_corrections(rows, dishes)
    weights = np.ones(len(rows))
    kept = np.flatnonzero(ok)
    weights[kept] = correction_weights(
        [rows[i].correction.corrected_by or rows[i].owner for i in kept],
        clients(owners),
        max_share_per_client,
    )
    corrections[~ok] = np.nan
    data = Dataset(
        ids=[row.id for row in rows],
        embeddings=np.stack([np.frombuffer(row.features.embedding, "<f4") for row in rows]),
        probabilities=probabilities,
        targets=np.where(np.isnan(corrections), labels, corrections).astype("f4"),
        image_sha256=[row.image_sha256 for row in rows],
        labels=labels,
        corrections=corrections,
        correction_weights=weights,
    )
    return data.subset(~np.isnan(data.targets).any(axis=1))
