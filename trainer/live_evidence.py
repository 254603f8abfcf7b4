"""What live traffic says about a version on trial: its answers, the baseline's answers for the
same photos, and the truth for them: a person's correction where there are MIN_TRUTH_PHOTOS of
those, else ChatGPT's labels (paired, as the offline gate compares; trainer/gate.py)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from sqlalchemy import and_, or_
from sqlmodel import col, select

from foodcal.domain.nutrition import NUTRIENTS
from foodcal.store import CorrectionReview, Database, LabelStatus, Rollout, Sample
from model_store.worker.nutrition_model import NutritionModel
from trainer.gate import EVIDENCE_CHATGPT, EVIDENCE_TRUTH, MIN_TRUTH_PHOTOS
from trainer.scores import MIN_DISH_SAMPLES, Score


@dataclass
class Evidence:
    version: np.ndarray  # [n, 4]: what the version on trial answered (or would have)
    baseline: np.ndarray  # [n, 4]: the version it is compared with, for the same photos
    labels: np.ndarray  # [n, 4]: what they are scored against (NaN rows: none of that kind)
    truths: np.ndarray | None = None  # [n, 4]: people's corrections, NaN where none
    kind: str = EVIDENCE_CHATGPT  # what `labels` are

    def __len__(self) -> int:
        return len(self.labels)

    def preferred(self) -> Evidence:
        """The photos a person corrected, against the correction, when there are enough of them;
        else the photos ChatGPT labelled, against the label."""
        truths = np.full_like(self.labels, np.nan) if self.truths is None else self.truths
        corrected = ~np.isnan(truths).any(axis=1)
        if corrected.sum() >= MIN_TRUTH_PHOTOS:
            return Evidence(
                self.version[corrected], self.baseline[corrected], truths[corrected], None, EVIDENCE_TRUTH
            )
        labelled = ~np.isnan(self.labels).any(axis=1)
        return Evidence(self.version[labelled], self.baseline[labelled], self.labels[labelled])


def _columns(prefix: str) -> list:
    return [getattr(Sample, f"{prefix}_{name}") for name in NUTRIENTS]


def _label_or_truth():
    """A ChatGPT label, or a correction an admin has not rejected (live photos are after every
    version's training: each correction is held out from both versions on trial)."""
    labelled = and_(Sample.label_status == LabelStatus.LABELED, *(c.is_not(None) for c in _columns("label")))
    corrected = and_(
        col(Sample.corrected_at).is_not(None),
        Sample.correction_review != CorrectionReview.REJECTED,
        or_(Sample.correction_flag == "", Sample.correction_review == CorrectionReview.CONFIRMED),
    )
    return or_(labelled, corrected)


def _labelled():
    return (Sample.label_status == LabelStatus.LABELED, *(c.is_not(None) for c in _columns("label")))


def _values(row, start: int) -> list[float]:
    """Four nutrients from `start`, NaN for a None (a photo without that kind of truth)."""
    return [np.nan if v is None else v for v in row[start : start + 4]]


def _labelled_of(rows, start: int) -> np.ndarray:
    """[n, 4] ChatGPT's labels (NaN where none): four columns from `start`, then the label status."""
    return np.array(
        [_values(row, start) if row[start + 4] == LabelStatus.LABELED else [np.nan] * 4 for row in rows],
        dtype=np.float64,
    ).reshape(-1, 4)


def _truths(rows, start: int) -> np.ndarray:
    """[n, 4] trusted corrections (NaN where none): four columns from `start`, the flag, the review."""

    def trusted(row) -> bool:
        flag, review = row[start + 4], row[start + 5]
        return review == CorrectionReview.CONFIRMED or (not flag and review != CorrectionReview.REJECTED)

    return np.array(
        [_values(row, start) if trusted(row) else [np.nan] * 4 for row in rows], dtype=np.float64
    ).reshape(-1, 4)


_TRUTH_COLUMNS = (
    *_columns("label"),
    Sample.label_status,
    *_columns("correction"),
    Sample.correction_flag,
    Sample.correction_review,
)


def challenger_evidence(db: Database, rollout: Rollout) -> Evidence:
    """Photos that both the challenger and the champion answered since the challenger went live
    (one shown, the other stored beside it), with a ChatGPT label or a correction."""
    pair = (rollout.version, rollout.baseline_version)
    with db.session() as session:
        rows = session.exec(
            select(Sample.pred_model_version, *_columns("pred"), *_columns("paired"), *_TRUTH_COLUMNS)
            .where(_label_or_truth(), Sample.created_at >= rollout.started_at)
            .where(col(Sample.pred_model_version).in_(pair), col(Sample.paired_model_version).in_(pair))
            .where(Sample.pred_model_version != Sample.paired_model_version)
            .where(*(c.is_not(None) for c in _columns("paired")))
        ).all()
    values = np.array([row[1:9] for row in rows], dtype=np.float64).reshape(-1, 8)
    answered, paired = values[:, :4], values[:, 4:8]
    by_challenger = np.array([row[0] == rollout.version for row in rows], dtype=bool)[:, None]
    return Evidence(
        np.where(by_challenger, answered, paired),
        np.where(by_challenger, paired, answered),
        _labelled_of(rows, 9),
        _truths(rows, 14),
    )


def served_evidence(db: Database, rollout: Rollout, window: int, baseline: NutritionModel) -> Evidence:
    """The served version's last `window` labelled or corrected answers since it was served, and
    what the version before it answers for the same photos, computed from their stored features."""
    with db.session() as session:
        rows = session.exec(
            select(Sample.embedding, Sample.class_probabilities, *_columns("pred"), *_TRUTH_COLUMNS)
            .where(_label_or_truth(), Sample.pred_model_version == rollout.version)
            .where(Sample.created_at >= rollout.served_at)
            .where(col(Sample.embedding).is_not(None), col(Sample.class_probabilities).is_not(None))
            .order_by(col(Sample.created_at).desc())
            .limit(window)
        ).all()
    # Photos embedded by another classifier than the baseline reads cannot be compared.
    rows = [row for row in rows if len(row[0]) == 4 * baseline.embedding_dim]
    if not rows:
        empty = np.zeros((0, 4))
        return Evidence(empty, empty, empty, empty)
    embeddings = np.stack([np.frombuffer(row[0], "<f4") for row in rows])
    probabilities = np.stack([np.frombuffer(row[1], "<f4") for row in rows])
    with torch.inference_mode():
        predicted = baseline.eval()(torch.from_numpy(embeddings), torch.from_numpy(probabilities))
    values = np.array([row[2:6] for row in rows], dtype=np.float64)
    return Evidence(values, predicted.numpy().astype(np.float64), _labelled_of(rows, 6), _truths(rows, 11))


def live_scores(db: Database, min_dish_samples: int = MIN_DISH_SAMPLES) -> dict[int, Score]:
    """Per version: what it answered, or answered beside the shown version (a challenger in shadow,
    the champion in a split), against the ChatGPT label the photo got later."""
    by_version: dict[int, list] = defaultdict(list)
    for prefix in ("pred", "paired"):
        version = getattr(Sample, f"{prefix}_model_version")
        columns = [*_columns(prefix), *_columns("label")]
        with db.session() as session:
            rows = session.exec(
                select(version, Sample.top1_dish, *columns).where(
                    *_labelled(), col(version).is_not(None), *(c.is_not(None) for c in columns)
                )
            ).all()
        for row in rows:
            by_version[row[0]].append(row)
    scores = {}
    for version, group in by_version.items():
        values = np.array([row[2:] for row in group], dtype=np.float64)
        scores[version] = Score.of(values[:, :4], values[:, 4:], [row[1] for row in group], min_dish_samples)
    return scores
