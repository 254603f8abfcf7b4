"""The trainer's reads of the gateway's samples: one function per question, so the columns the
trainer depends on are named here (docs/architecture.md, "Tables and who owns them"). The trainer
writes only `sample_features` (trainer/backfill.py)."""

from __future__ import annotations

from sqlalchemy import or_
from sqlmodel import col, func, select

from foodcal.store.db import Database
from foodcal.store.images import PHOTO_REMOVED
from foodcal.store.tables import LabelJob, LabelStatus, Sample, SampleCorrection, SampleFeatures


def _teaching(query):
    """Samples that may teach: a ChatGPT label or a person's correction (any classifier)."""
    labelled = or_(LabelJob.status == LabelStatus.LABELED, col(SampleCorrection.corrected_at).is_not(None))
    return (
        query.join(LabelJob, col(LabelJob.sample_id) == Sample.id)
        .outerjoin(SampleCorrection, col(SampleCorrection.sample_id) == Sample.id)
        .where(labelled)
    )


def teaching_samples(db: Database, classifier_version: str) -> list[Sample]:
    """Labelled or corrected samples embedded by `classifier_version`, oldest first, with every part."""
    query = (
        _teaching(select(Sample))
        .join(SampleFeatures, col(SampleFeatures.sample_id) == Sample.id)
        .where(SampleFeatures.classifier_version == classifier_version)
        .where(col(SampleFeatures.embedding).is_not(None))
        .order_by(col(Sample.created_at), col(Sample.id))
    )
    with db.session() as session:
        return list(session.exec(query).unique().all())


def count_teaching(db: Database, not_embedded_by: str | None = None) -> int:
    """Labelled or corrected samples; with `not_embedded_by`, those another classifier embedded."""
    query = _teaching(select(func.count()).select_from(Sample))
    if not_embedded_by is not None:
        query = query.join(SampleFeatures, col(SampleFeatures.sample_id) == Sample.id).where(
            SampleFeatures.classifier_version != not_embedded_by
        )
    with db.session() as session:
        return session.exec(query).one()


def newest_classifier(db: Database) -> str:
    """The classifier of the newest embedded sample ("" when none)."""
    query = (
        select(SampleFeatures.classifier_version)
        .join(Sample, col(Sample.id) == SampleFeatures.sample_id)
        .where(col(SampleFeatures.embedding).is_not(None))
        .order_by(col(Sample.created_at).desc())
        .limit(1)
    )
    with db.session() as session:
        return session.exec(query).first() or ""


def policy_reasons_starting(db: Database, prefix: str) -> dict[str, str]:
    """{sample id: why the label policy asked ChatGPT} for the reasons that start with `prefix`."""
    query = select(LabelJob.sample_id, LabelJob.policy_reason).where(
        col(LabelJob.policy_reason).startswith(prefix)
    )
    with db.session() as session:
        return dict(session.exec(query).all())


def samples_to_reembed(db: Database, classifier_version: str) -> list[tuple[str, str]]:
    """(sample id, photo sha256) of samples another classifier embedded whose photo is still kept."""
    query = (
        select(Sample.id, Sample.image_sha256)
        .join(SampleFeatures, col(SampleFeatures.sample_id) == Sample.id)
        .where(SampleFeatures.classifier_version != classifier_version, Sample.image_path != PHOTO_REMOVED)
    )
    with db.session() as session:
        return list(session.exec(query).all())
