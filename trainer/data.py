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
from sqlmodel import col, func, or_, select

from foodcal.store import Database, LabelStatus, Sample
from trainer.noted_labels import may_train
from trainer.teacher_bias import TeacherBias
from trainer.trust import capped_rows, clients, correction_ratio, correction_weights, trusted

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


def learn_teacher_bias(*parts: Dataset) -> TeacherBias:
    """The teacher's bias from the learnable corrections of labelled photos in `parts`."""
    teacher, truth, dishes, weights = [], [], [], []
    for part in parts:
        both = part.has_label() & part.has_correction()
        teacher.append(part.teacher()[both])
        truth.append(part.truth()[both])
        dishes.append(part.dishes[both])
        weights.append(
            np.ones(int(both.sum())) if part.correction_weights is None else part.correction_weights[both]
        )
    return TeacherBias.fit(
        np.concatenate(teacher).astype("f8"),
        np.concatenate(truth).astype("f8"),
        np.concatenate(dishes).astype(np.int64),
        np.concatenate(weights),
    )


def towards_truth(part: Dataset, bias: TeacherBias, corrections: bool = True) -> Dataset:
    """`part` with targets the truth where a person gave it (if `corrections`), else ChatGPT's label
    adjusted by the teacher's learnt bias; photos with neither are dropped."""
    labels = part.teacher()
    adjusted = bias.adjust(np.nan_to_num(labels), part.dishes) if len(part) else labels
    targets = np.where(part.has_label()[:, None], adjusted, np.nan)
    if corrections:
        targets = np.where(part.has_correction()[:, None], part.truth(), targets)
    keep = ~np.isnan(targets).any(axis=1)
    return replace(part.subset(keep), targets=targets[keep].astype(np.float32))


class RunData(NamedTuple):
    """What one training run reads: its sides with their targets, and the teacher's learnt bias."""

    train: Dataset
    early_stopping: Dataset
    validation: Dataset  # ChatGPT's labels, adjusted by `bias`
    truth: Dataset  # the held-out corrections
    bias: TeacherBias


def run_data(dataset: Dataset) -> RunData:
    """Towards the truth: corrections where people gave them, else ChatGPT's labels adjusted by the
    bias the learnable corrections show (trainer/teacher_bias.py)."""
    split = dataset.split()
    bias = learn_teacher_bias(split.train, split.early_stopping)
    return RunData(
        towards_truth(split.train, bias),
        towards_truth(split.early_stopping, bias),
        towards_truth(split.validation, bias, corrections=False),
        split.truth,
        bias,
    )


def count_labelled(db: Database) -> int:
    """Samples that may teach the model (any classifier version): ChatGPT labels or corrections."""
    with db.session() as session:
        return session.exec(select(func.count()).select_from(Sample).where(_labelled())).one()


def count_stale(db: Database, classifier_version: str) -> int:
    """Labelled or corrected samples embedded by another classifier: `make backfill` would add them."""
    with db.session() as session:
        query = select(func.count()).select_from(Sample).where(_labelled())
        return session.exec(query.where(Sample.classifier_version != classifier_version)).one()


def _labelled():
    return or_(Sample.label_status == LabelStatus.LABELED, col(Sample.corrected_at).is_not(None))


def one_per_photo(rows: list[Sample]) -> list[Sample]:
    """One photo sent many times counts once: its corrected sample, else its newest label."""
    best: dict[str, Sample] = {}
    for row in rows:  # oldest first: a later one of the same kind wins
        kept = best.get(row.image_sha256)
        if kept is None or row.corrected_at is not None or kept.corrected_at is None:
            best[row.image_sha256] = row
    return sorted(best.values(), key=lambda row: row.id)


def load_dataset(db: Database, classifier_version: str, max_share_per_client: float = 1.0) -> Dataset:
    """Samples whose cached embedding came from `classifier_version`; REFERENCE labels never count.

    One row per photo; where several clients contribute, none keeps more than its share of the
    rows or of the corrections (trainer/trust.py); untrusted corrections are left out."""
    with db.session() as session:
        rows = session.exec(
            select(Sample)
            .where(_labelled(), Sample.classifier_version == classifier_version)
            .where(col(Sample.embedding).is_not(None))
            .order_by(col(Sample.created_at), col(Sample.id))
        ).all()
    rows = [row for row in one_per_photo(list(rows)) if row.training_target is not None]
    if not rows:
        return Dataset([], np.zeros((0, 0), "f4"), np.zeros((0, 101), "f4"), np.zeros((0, 4), "f4"), [])
    owners = [row.owner for row in rows]
    keep = capped_rows(owners, [row.image_sha256 for row in rows], max_share_per_client)
    rows = [row for row, kept in zip(rows, keep, strict=True) if kept]
    probabilities = np.stack([np.frombuffer(row.class_probabilities, "<f4") for row in rows])
    dishes = probabilities.argmax(axis=1)
    nan = (np.nan,) * 4
    # A label the person's note moved far from what the photo shows never trains the photo-only head.
    labels = np.array(
        [
            row.values("label") or nan if row.label_status == LabelStatus.LABELED and may_train(row) else nan
            for row in rows
        ],
        "f4",
    )
    corrections = np.array([row.values("correction") or nan for row in rows], "f4")
    ok = trusted_corrections(rows, dishes)
    weights = np.ones(len(rows))
    kept = np.flatnonzero(ok)
    weights[kept] = correction_weights(
        [rows[i].corrected_by or rows[i].owner for i in kept], clients(owners), max_share_per_client
    )
    corrections[~ok] = np.nan
    data = Dataset(
        ids=[row.id for row in rows],
        embeddings=np.stack([np.frombuffer(row.embedding, "<f4") for row in rows]),
        probabilities=probabilities,
        targets=np.where(np.isnan(corrections), labels, corrections).astype("f4"),
        image_sha256=[row.image_sha256 for row in rows],
        labels=labels,
        corrections=corrections,
        correction_weights=weights,
    )
    return data.subset(~np.isnan(data.targets).any(axis=1))


def trusted_corrections(rows: list[Sample], dishes: np.ndarray) -> np.ndarray:
    """[n] bool: the rows whose correction may be learnt from or scored against (trainer/trust.py)."""
    corrected = [index for index, row in enumerate(rows) if row.corrected_at is not None]
    ok = trusted(
        [rows[i].correction_flag for i in corrected],
        [rows[i].correction_review for i in corrected],
        [int(dishes[i]) for i in corrected],
        [correction_ratio(rows[i].correction_calories_kcal, _reference_kcal(rows[i])) for i in corrected],
    )
    mask = np.zeros(len(rows), dtype=bool)
    mask[corrected] = ok
    return mask


def _reference_kcal(row: Sample) -> float | None:
    """What a correction is measured against: ChatGPT's label, else our prediction."""
    return row.label_calories_kcal if row.label_calories_kcal is not None else row.pred_calories_kcal
