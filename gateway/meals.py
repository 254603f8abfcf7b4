"""A meal: the plates a client sent with one meal_id, and what they add up to."""

from __future__ import annotations

from sqlmodel import Session, col, select

from foodcal.domain.convert import nutrition_proto
from foodcal.store import Sample
from foodcal.v1 import gateway_pb2
from gateway.samples import sample_proto
from gateway.shown import shown

MAX_MEAL_ID_CHARS = 64
MAX_PLATES = 100  # a meal is a few plates; more is a misuse of meal_id, not a meal


def meal(session: Session, meal_id: str, owner: str | None) -> gateway_pb2.GetMealResponse | None:
    """The meal's plates, oldest first, and their sum; None when the caller has no such meal.
    `owner`: a client's identity (its own plates only); None for an admin (every client's)."""
    query = select(Sample).where(Sample.meal_id == meal_id)
    if owner is not None:
        query = query.where(Sample.owner == owner)
    plates = session.exec(query.order_by(col(Sample.created_at), col(Sample.id)).limit(MAX_PLATES)).all()
    if not plates:
        return None
    total = [0.0] * 4
    for plate in plates:
        for index, value in enumerate(shown(plate)[0] or (0.0,) * 4):
            total[index] += value
    return gateway_pb2.GetMealResponse(
        meal_id=meal_id,
        plates=[sample_proto(plate) for plate in plates],
        total=nutrition_proto(tuple(total)),
        plates_count=len(plates),
    )
