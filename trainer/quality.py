"""The quality ledger: every version scored on fixed held-out photos and on live traffic.

Two held-out sets, both decided by the photo's hash (trainer/data.py), so no version is ever scored
on a photo it was trained on:
- the ChatGPT test set: the last TEST_PERCENT buckets, scored against ChatGPT's labels;
- the truth set: trusted corrections (trainer/trust.py) in the validation and test buckets,
  scored against people's values, the closest thing to truth we have. ChatGPT itself is scored
  there too (`chatgpt_vs_corrections`): the bar a student has to clear.
Live errors are what a version answered (samples.pred_model_version) against the ChatGPT label that
came later. Nothing is stored: the report is computed on demand, from the samples and the archives.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from sqlmodel import col, or_, select

from foodcal.domain.convert import timestamp
from foodcal.store import Database, LabelStatus, ModelVersionRow, Sample
from foodcal.v1 import trainer_pb2
from model_store.worker.nutrition_model import NutritionModel
from trainer.data import (
    TEST_PERCENT,
    TRUTH_PERCENT,
    in_test_set,
    in_truth_set,
    one_per_photo,
    trusted_corrections,
)
from trainer.gate import PRIMARY_SCORE
from trainer.live_evidence import live_scores
from trainer.rollout_ledger import Ledger
from trainer.scores import MIN_DISH_SAMPLES, Errors, Score

log = logging.getLogger(__name__)

WORST_DISHES = 5
NO_TRUTH = (
    "no corrected photo is held out yet: corrections (CorrectSample) of photos in {percent}% of hash "
    "buckets are the truth set; the others are learnt from"
)


@dataclass
class TestSet:
    """Held-out samples embedded by one classifier; values are NaN where a sample has none."""

    embeddings: np.ndarray
    probabilities: np.ndarray
    labels: np.ndarray  # [n, 4] ChatGPT's label, in the ChatGPT test set only
    corrections: np.ndarray  # [n, 4] a person's trusted values, in the truth set only
    teacher: np.ndarray  # [n, 4] ChatGPT's label of truth-set photos: scored against the truth
    dishes: list[str]

    def __len__(self) -> int:
        return len(self.dishes)


def load_test_set(db: Database, classifier: str) -> TestSet:
    with db.session() as session:
        rows = session.exec(
            select(Sample)
            .where(Sample.classifier_version == classifier, col(Sample.embedding).is_not(None))
            .where(or_(Sample.label_status == LabelStatus.LABELED, col(Sample.corrected_at).is_not(None)))
            .order_by(col(Sample.created_at), col(Sample.id))
        ).all()
    rows = one_per_photo(list(rows))
    probabilities = (
        np.stack([np.frombuffer(row.class_probabilities, "<f4") for row in rows])
        if rows
        else np.zeros((0, 101), "f4")
    )
    trusted = trusted_corrections(rows, probabilities.argmax(axis=1)) if rows else np.zeros(0, bool)
    truth = np.array(
        [ok and in_truth_set(row.image_sha256) for row, ok in zip(rows, trusted, strict=True)], bool
    )
    chatgpt = np.array(
        [row.label_status == LabelStatus.LABELED and in_test_set(row.image_sha256) for row in rows], bool
    )
    keep = truth | chatgpt
    rows = [row for row, kept in zip(rows, keep, strict=True) if kept]
    truth, chatgpt = truth[keep], chatgpt[keep]
    nan = (float("nan"),) * 4

    def values(prefix: str, where: np.ndarray) -> np.ndarray:
        return np.array(
            [(row.values(prefix) if ok else None) or nan for row, ok in zip(rows, where, strict=True)], "f8"
        ).reshape(-1, 4)

    labelled = np.array([row.label_status == LabelStatus.LABELED for row in rows], bool)
    return TestSet(
        embeddings=np.stack([np.frombuffer(row.embedding, "<f4") for row in rows])
        if rows
        else np.zeros((0, 0), "f4"),
        probabilities=probabilities[keep],
        labels=values("label", chatgpt),
        corrections=values("correction", truth),
        teacher=values("label", truth & labelled),
        dishes=[row.top1_dish for row in rows],
    )


def newest_classifier(db: Database) -> str:
    """The classifier of the newest embedded sample (when TorchServe cannot say which it serves)."""
    with db.session() as session:
        query = select(Sample.classifier_version).where(col(Sample.embedding).is_not(None))
        return session.exec(query.order_by(col(Sample.created_at).desc()).limit(1)).first() or ""


def predict(model: NutritionModel, data: TestSet) -> np.ndarray:
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(data.embeddings), torch.from_numpy(data.probabilities)).numpy()


def _score(predictions: np.ndarray, truths: np.ndarray, data: TestSet, min_dish_samples: int) -> Score:
    """`predictions` against `truths` on the samples that have both."""
    has = ~np.isnan(truths).any(axis=1) & ~np.isnan(predictions).any(axis=1)
    dishes = [dish for dish, keep in zip(data.dishes, has, strict=True) if keep]
    return Score.of(predictions[has], truths[has], dishes, min_dish_samples)


def score_test_set(
    model: NutritionModel, data: TestSet, min_dish_samples: int = MIN_DISH_SAMPLES
) -> tuple[Score, Score]:
    """(against ChatGPT's labels on the test set, against the truth on the truth set)."""
    predictions = predict(model, data) if len(data) else np.zeros((0, 4))
    return (
        _score(predictions, data.labels, data, min_dish_samples),
        _score(predictions, data.corrections, data, min_dish_samples),
    )


def teacher_vs_truth(data: TestSet, min_dish_samples: int = MIN_DISH_SAMPLES) -> Score:
    """ChatGPT's own labels against people's values on the truth set."""
    return _score(data.teacher, data.corrections, data, min_dish_samples)


@dataclass
class VersionReport:
    row: ModelVersionRow
    test_chatgpt: Score | None = None
    test_corrections: Score | None = None
    live: Score | None = None
    unscored_reason: str = ""
    at_creation: Errors | None = field(default=None)
    decisions: list = field(default_factory=list)  # trainer_pb2.RolloutDecision, oldest first
    live_role: str = ""

    def to_proto(self, worst_dishes: int) -> trainer_pb2.VersionQuality:
        empty = Score(Errors.of(np.zeros((0, 4)), np.zeros((0, 4))), {})
        return trainer_pb2.VersionQuality(
            version=self.row.version,
            served=self.row.served,
            created_at=timestamp(self.row.created_at),
            description=self.row.description,
            classifier=self.row.classifier_version,
            test_chatgpt=(self.test_chatgpt or empty).to_proto(worst_dishes),
            test_corrections=(self.test_corrections or empty).to_proto(worst_dishes),
            live=(self.live or empty).to_proto(worst_dishes),
            test_chatgpt_at_creation=self.at_creation.to_proto() if self.at_creation else None,
            unscored_reason=self.unscored_reason,
            decisions=self.decisions,
            live_role=self.live_role,
        )


@dataclass
class Report:
    versions: list[VersionReport]
    chatgpt_vs_corrections: Score  # on the current classifier's truth set


def report(
    db: Database,
    rows: list[ModelVersionRow],
    load_model,
    current_classifier: str,
    min_dish_samples: int = MIN_DISH_SAMPLES,
) -> Report:
    """Every version in `rows`, and ChatGPT, scored now; `load_model(row)` reads its archive."""
    live, ledger = live_scores(db, min_dish_samples), Ledger(db)
    test_sets: dict[str, TestSet] = {}
    reports = []
    for row in rows:
        entry = VersionReport(row, live=live.get(row.version), decisions=ledger.decisions[row.version])
        entry.live_role = ledger.role(row.version, row.served)
        created = (row.metrics or {}).get("test_set")
        entry.at_creation = Errors.from_dict(created["chatgpt"]) if created else None
        classifier = row.classifier_version or current_classifier  # version 0 reads no embedding
        if classifier not in test_sets:
            test_sets[classifier] = load_test_set(db, classifier)
        try:
            entry.test_chatgpt, entry.test_corrections = score_test_set(
                load_model(row), test_sets[classifier], min_dish_samples
            )
        except (OSError, KeyError, RuntimeError) as error:  # archive gone, or features of another shape
            entry.unscored_reason = f"{type(error).__name__}: {error}"
        reports.append(entry)
    if current_classifier not in test_sets:
        test_sets[current_classifier] = load_test_set(db, current_classifier)
    return Report(reports, teacher_vs_truth(test_sets[current_classifier], min_dish_samples))


def report_proto(report: Report, worst_dishes: int, min_dish_samples: int):
    served = next((entry.row.version for entry in report.versions if entry.row.served), 0)
    teacher = report.chatgpt_vs_corrections
    truth_photos = max(
        [teacher.overall.samples]
        + [entry.test_corrections.overall.samples for entry in report.versions if entry.test_corrections]
    )
    return trainer_pb2.GetQualityReportResponse(
        versions=[entry.to_proto(worst_dishes) for entry in report.versions],
        served_version=served,
        test_percent=TEST_PERCENT,
        min_dish_samples=min_dish_samples,
        primary_score=PRIMARY_SCORE,
        chatgpt_vs_corrections=teacher.to_proto(worst_dishes),
        truth_percent=TRUTH_PERCENT,
        truth_note="" if truth_photos else NO_TRUTH.format(percent=TRUTH_PERCENT),
    )


def at_creation(model: NutritionModel, db: Database, classifier: str) -> dict:
    """What a run stores with the version it makes: its test-set errors on that day."""
    chatgpt, corrections = score_test_set(model, load_test_set(db, classifier))
    ours, people = chatgpt.overall, corrections.overall
    log.info(
        "test set score %.4f on %d ChatGPT labels, %.4f on %d corrections",
        ours.score, ours.samples, people.score, people.samples,
    )  # fmt: skip
    return {"chatgpt": chatgpt.overall.as_dict(), "corrections": corrections.overall.as_dict()}
