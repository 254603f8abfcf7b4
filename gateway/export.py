"""ExportSamples: a person's samples as they would keep them (JSON lines from the CLI), oldest
first, read a page at a time so a long history never sits in memory at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

from sqlalchemy.orm import defer
from sqlmodel import col, select

from foodcal.domain.convert import nutrition_proto, timestamp
from foodcal.domain.items import FoodItem
from foodcal.store import Database, Sample
from foodcal.store.images import PHOTO_REMOVED
from foodcal.v1 import common_pb2, gateway_pb2
from gateway.shown import shown

PAGE_SIZE = 200


def exported(sample: Sample) -> gateway_pb2.ExportSamplesResponse:
    values, source = shown(sample)
    label = sample.label
    dish = label.dish if label is not None and label.dish else (sample.dishes[0][0] if sample.dishes else "")
    items = sample.correction_items or sample.label_items or []
    return gateway_pb2.ExportSamplesResponse(
        sample_id=sample.id,
        created_at=timestamp(sample.created_at),
        dish=dish,
        nutrition=nutrition_proto(values),
        source=common_pb2.NutritionSource.Value(source),
        chatgpt=nutrition_proto(sample.values("label")),
        own_prediction=nutrition_proto(sample.values("pred")),
        correction=nutrition_proto(sample.values("correction")),
        note=sample.note,
        items=[FoodItem.from_json(item).to_proto() for item in items],
        photo_removed=sample.image_path == PHOTO_REMOVED,
        image_sha256=sample.image_sha256,
        owner=sample.owner or "",
    )


def _page(db: Database, owner: str | None, after: tuple[datetime, str] | None) -> list[Sample]:
    # Features are the trainer's, not the person's: never read here.
    query = select(Sample).options(defer(Sample.embedding), defer(Sample.class_probabilities))
    query = query.order_by(col(Sample.created_at), col(Sample.id))
    if owner is not None:
        query = query.where(Sample.owner == owner)
    if after is not None:  # keyset: stable while samples arrive or go
        created, sample_id = after
        query = query.where(
            (col(Sample.created_at) > created)
            | ((col(Sample.created_at) == created) & (col(Sample.id) > sample_id))
        )
    with db.session() as session:
        return list(session.exec(query.limit(PAGE_SIZE)).all())


async def export_samples(db: Database, owner: str | None) -> AsyncIterator[gateway_pb2.ExportSamplesResponse]:
    """Every sample of `owner` (None: every sample), oldest first."""
    after = None
    while True:
        rows = await asyncio.to_thread(_page, db, owner, after)
        for row in rows:
            yield exported(row)
        if len(rows) < PAGE_SIZE:
            return
        after = (rows[-1].created_at, rows[-1].id)
