"""The trainer's reads of live answers for a rollout (trainer/live_evidence.py): the gateway's
samples with their label jobs, corrections, paired predictions and features, as plain rows.

Each row ends with TRUTH: the label's four nutrients, the label status, the correction's four
nutrients, its flag and its review."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, or_
from sqlmodel import col, select

from foodcal.store.db import Database
from foodcal.store.tables import (
    CorrectionReview,
    LabelJob,
    LabelStatus,
    PairedPrediction,
    Sample,
    SampleCorrection,
    SampleFeatures,
    nutrient_names,
)

# Each source's four nutrient columns, in foodcal.domain.nutrition.NUTRIENTS order.
PRED = [getattr(Sample, name) for name in nutrient_names("pred")]
PAIRED = [getattr(PairedPrediction, name) for name in nutrient_names()]
LABEL = [getattr(LabelJob, name) for name in nutrient_names("label")]
CORRECTION = [getattr(SampleCorrection, name) for name in nutrient_names()]
TRUTH = (*LABEL, LabelJob.status, *CORRECTION, SampleCorrection.flag, SampleCorrection.review)


def _with_truth(query):
    return query.join(LabelJob, col(LabelJob.sample_id) == Sample.id).outerjoin(
        SampleCorrection, col(SampleCorrection.sample_id) == Sample.id
    )


def _labelled():
    return (LabelJob.status == LabelStatus.LABELED, *(c.is_not(None) for c in LABEL))


def _label_or_truth():
    """A ChatGPT label, or a correction an admin has not rejected (live photos are after every
    version's training: each correction is held out from both versions on trial)."""
    corrected = and_(
        col(SampleCorrection.corrected_at).is_not(None),
        SampleCorrection.review != CorrectionReview.REJECTED,
        or_(SampleCorrection.flag == "", SampleCorrection.review == CorrectionReview.CONFIRMED),
    )
    return or_(and_(*_labelled()), corrected)


def paired_answers(db: Database, pair: tuple[int, int], since: datetime) -> list:
    """Photos since `since` that both versions of `pair` answered (one shown, the other paired),
    with a label or a trusted correction: (shown version, PRED…, PAIRED…, TRUTH…)."""
    query = (
        _with_truth(select(Sample.pred_model_version, *PRED, *PAIRED, *TRUTH))
        .join(PairedPrediction, col(PairedPrediction.sample_id) == Sample.id)
        .where(_label_or_truth(), Sample.created_at >= since)
        .where(col(Sample.pred_model_version).in_(pair), col(PairedPrediction.model_version).in_(pair))
        .where(Sample.pred_model_version != PairedPrediction.model_version)
        .where(*(c.is_not(None) for c in PAIRED))
    )
    with db.session() as session:
        return list(session.exec(query).all())


def served_answers(db: Database, version: int, since: datetime, window: int) -> list:
    """`version`'s last `window` answers since `since` with a label or a trusted correction, newest
    first: (embedding, class probabilities, PRED…, TRUTH…)."""
    features = SampleFeatures
    query = (
        _with_truth(select(features.embedding, features.class_probabilities, *PRED, *TRUTH))
        .join(features, col(features.sample_id) == Sample.id)
        .where(_label_or_truth(), Sample.pred_model_version == version, Sample.created_at >= since)
        .where(col(features.embedding).is_not(None), col(features.class_probabilities).is_not(None))
        .order_by(col(Sample.created_at).desc())
        .limit(window)
    )
    with db.session() as session:
        return list(session.exec(query).all())


def labelled_answers(db: Database, paired: bool) -> list:
    """Every labelled answer of a version, shown (`paired` False) or stored beside the shown one
    (True): (version, top-1 dish, its four nutrients, LABEL…)."""
    version, values = (
        (PairedPrediction.model_version, PAIRED) if paired else (Sample.pred_model_version, PRED)
    )
    query = (
        select(version, SampleFeatures.top1_dish, *values, *LABEL)
        .select_from(Sample)
        .join(LabelJob, col(LabelJob.sample_id) == Sample.id)
        .join(SampleFeatures, col(SampleFeatures.sample_id) == Sample.id)
        .where(*_labelled(), col(version).is_not(None), *(c.is_not(None) for c in values))
    )
    if paired:
        query = query.join(PairedPrediction, col(PairedPrediction.sample_id) == Sample.id)
    with db.session() as session:
        return list(session.exec(query).all())
