"""Reading samples for the API: one sample, pages of samples, stats; and their protobuf form."""

from __future__ import annotations

import base64
from datetime import datetime

from sqlalchemy import and_, func, true
from sqlmodel import Session, col, select

from foodcal.domain.convert import nutrition_proto, timestamp
from foodcal.domain.items import FoodItem
from foodcal.domain.nutrition import NUTRIENTS
from foodcal.store import ChatGPTCall, CorrectionReview, LabelCache, LabelStatus, Sample
from foodcal.store.images import PHOTO_REMOVED
from foodcal.v1 import common_pb2, gateway_pb2
from gateway.budget import spent_today
from gateway.label_policy import CONFIDENT_REASON
from gateway.label_results import reason_code


def label_proto(sample: Sample) -> common_pb2.Label | None:
    label = sample.label
    return label.to_proto() if label is not None else None


def sample_proto(sample: Sample) -> gateway_pb2.Sample:
    message = gateway_pb2.Sample(
        sample_id=sample.id,
        image_sha256=sample.image_sha256,
        created_at=timestamp(sample.created_at),
        dishes=[common_pb2.DishCandidate(label=label, probability=p) for label, p in sample.dishes],
        own_prediction=nutrition_proto(sample.values("pred")),
        own_prediction_version=sample.pred_model_version,  # None: unset
        chatgpt_label=label_proto(sample),
        difference=nutrition_proto(sample.difference),
        label_status=LabelStatus(sample.label_status).to_proto(),
        label_attempts=sample.label_attempts,
        label_error=reason_code(sample.label_error),
        correction=nutrition_proto(sample.values("correction")),
        corrected=sample.corrected_at is not None,
        shown_source=common_pb2.NutritionSource.Value(sample.shown_source or "NUTRITION_SOURCE_UNSPECIFIED"),
        classifier=sample.classifier_version,
        filename=sample.filename,
        label_policy_reason=sample.label_policy_reason,
        note=sample.note,
        own_portion=portion_proto(sample),
        correction_items=[FoodItem.from_json(item).to_proto() for item in sample.correction_items or []],
        paired_prediction=nutrition_proto(sample.values("paired")),
        paired_prediction_version=sample.paired_model_version,  # None: unset
        correction_flag=sample.correction_flag,
        more_image_sha256s=sample.more_image_sha256s or [],
        meal_id=sample.meal_id,
        correction_review=(
            CorrectionReview(sample.correction_review).to_proto() if sample.corrected_at is not None else None
        ),
        photo_removed=sample.image_path == PHOTO_REMOVED,
    )
    return message


def portion_proto(sample: Sample) -> common_pb2.Portion | None:
    """The weight our prediction assumes (gateway/portion.py); None for samples from before it."""
    if sample.pred_portion_g is None:
        return None
    return common_pb2.Portion(grams=sample.pred_portion_g, basis=sample.pred_portion_basis)


def encode_page_token(sample: Sample) -> str:
    return base64.urlsafe_b64encode(f"{sample.created_at.isoformat()}|{sample.id}".encode()).decode()


def decode_page_token(token: str) -> tuple[datetime, str]:
    try:
        created, sample_id = base64.urlsafe_b64decode(token.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created), sample_id
    except (ValueError, UnicodeDecodeError):
        raise ValueError("page_token is not one this service issued") from None


def list_samples(
    session: Session,
    page_size: int,
    page_token: str,
    status: LabelStatus | None,
    owner: str | None = None,
    corrections: int = gateway_pb2.CORRECTION_FILTER_UNSPECIFIED,
):
    """Newest first, keyset-paged on (created_at, id) so pages stay stable while samples arrive."""
    query = select(Sample).order_by(col(Sample.created_at).desc(), col(Sample.id).desc())
    if status is not None:
        query = query.where(Sample.label_status == status)
    if corrections != gateway_pb2.CORRECTION_FILTER_UNSPECIFIED:
        query = query.where(col(Sample.corrected_at).is_not(None))
    if corrections == gateway_pb2.CORRECTION_FILTER_FLAGGED:
        query = query.where(
            Sample.correction_flag != "", Sample.correction_review == CorrectionReview.UNREVIEWED
        )
    elif corrections == gateway_pb2.CORRECTION_FILTER_REJECTED:
        query = query.where(Sample.correction_review == CorrectionReview.REJECTED)
    if owner is not None:  # a client lists only its own samples
        query = query.where(Sample.owner == owner)
    if page_token:
        created, sample_id = decode_page_token(page_token)
        query = query.where(
            (col(Sample.created_at) < created)
            | ((col(Sample.created_at) == created) & (col(Sample.id) < sample_id))
        )
    rows = session.exec(query.limit(page_size + 1)).all()
    next_token = encode_page_token(rows[page_size - 1]) if len(rows) > page_size else ""
    return rows[:page_size], next_token


def _mean_abs_diff_columns() -> list:
    return [
        func.avg(func.abs(getattr(Sample, f"pred_{n}") - getattr(Sample, f"label_{n}"))) for n in NUTRIENTS
    ]


def _means(values) -> tuple[float, ...]:
    return tuple(float(m or 0.0) for m in values)


def _sample_stats(session: Session, which=true()) -> gateway_pb2.GetStatsResponse:
    """What the samples chosen by `which` say: counts by label status and our difference from
    ChatGPT, overall and per version. A fixed number of queries, however many there are."""
    by_status = dict(
        session.exec(
            select(Sample.label_status, func.count()).where(which).group_by(Sample.label_status)
        ).all()
    )
    corrected = session.exec(select(func.count()).where(which, col(Sample.corrected_at).is_not(None))).one()
    labelled = and_(Sample.label_status == LabelStatus.LABELED, which)
    _, *overall = session.exec(select(func.count(), *_mean_abs_diff_columns()).where(labelled)).one()
    per_version = session.exec(
        select(Sample.pred_model_version, func.count(), *_mean_abs_diff_columns())
        .where(labelled)
        .group_by(Sample.pred_model_version)
        .order_by(Sample.pred_model_version)
    ).all()
    return gateway_pb2.GetStatsResponse(
        total_samples=sum(by_status.values()),
        training_data_samples=by_status.get(LabelStatus.LABELED, 0),
        pending_labels=by_status.get(LabelStatus.PENDING, 0),
        failed_labels=by_status.get(LabelStatus.FAILED, 0),
        rejected_labels=by_status.get(LabelStatus.REJECTED, 0),
        corrected_samples=corrected,
        mean_absolute_difference=nutrition_proto(_means(overall)),
        by_version=[
            gateway_pb2.VersionDifference(
                nutrition_version=version,  # None: samples stored without a prediction
                samples=count,
                mean_absolute_difference=nutrition_proto(_means(means)),
            )
            for version, count, *means in per_version
        ],
    )


def stats(session: Session, daily_budget_usd: float = 0.0) -> gateway_pb2.GetStatsResponse:
    """An admin's stats: every sample, plus ChatGPT's calls, tokens, cost, cache and budget."""
    response = _sample_stats(session)
    calls, prompt, completion, cost = session.exec(
        select(
            func.count(),
            func.coalesce(func.sum(ChatGPTCall.prompt_tokens), 0),
            func.coalesce(func.sum(ChatGPTCall.completion_tokens), 0),
            func.coalesce(func.sum(ChatGPTCall.cost_usd), 0.0),
        )
    ).one()
    hits = session.exec(select(func.coalesce(func.sum(LabelCache.hits), 0))).one()
    avoided = session.exec(
        select(func.count()).where(col(Sample.label_policy_reason).startswith(CONFIDENT_REASON))
    ).one()
    today = spent_today(session)
    response.chatgpt_calls, response.chatgpt_cache_hits = calls, hits
    response.usage.CopyFrom(
        common_pb2.TokenUsage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            estimated_cost_usd=float(cost),
        )
    )
    response.chatgpt_calls_avoided, response.chatgpt_spent_today_usd = avoided, today
    if daily_budget_usd > 0:
        response.chatgpt_budget_left_usd = max(daily_budget_usd - today, 0.0)
    return response


def own_stats(session: Session, owner: str) -> gateway_pb2.GetStatsResponse:
    """A client's stats: its own samples only. ChatGPT's calls, cost and cache are the service's,
    not the client's, and stay empty (an admin's GetStats has them)."""
    return _sample_stats(session, Sample.owner == owner)
