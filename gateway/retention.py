"""RETENTION_DAYS: photos older than that are deleted on a schedule; their samples stay.

A removed photo's samples keep every number and their cached features (training reads those,
never the photo), and their `image_path` says PHOTO_REMOVED. A photo sent again recently (a newer
sample with the same sha256) stays until that sample is old too. Every gateway may run it: each
step is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import col, select

from foodcal.store import Database, Sample
from foodcal.store.images import PHOTO_REMOVED
from foodcal.store.tables import utcnow
from gateway.deletion import angle_users

log = logging.getLogger(__name__)

BATCH = 500  # photos per pass: a long backlog goes over several passes, never one huge query


def _newer_users(sha256: str, cutoff: datetime):
    """A sample from `cutoff` on that has `sha256` as its photo or as another angle."""
    return select(Sample.id).where(
        col(Sample.created_at) >= cutoff,
        (col(Sample.image_sha256) == sha256) | col(Sample.id).in_(angle_users(sha256)),
    )


def remove_old_photos(db: Database, images, cutoff: datetime) -> int:
    """Deletes the photos of samples created before `cutoff` that no newer sample has; returns how many."""
    kept = col(Sample.image_path).not_in((PHOTO_REMOVED, ""))  # "": an AnalyzeMeal still storing it
    newer = select(Sample.image_sha256).where(col(Sample.created_at) >= cutoff)
    with db.session() as session:
        old = session.exec(
            select(Sample.image_sha256)
            .where(col(Sample.created_at) < cutoff, kept, col(Sample.image_sha256).not_in(newer))
            .distinct()
            .limit(BATCH)
        ).all()
    removed = 0
    for sha256 in old:
        try:
            images.delete(sha256)
        except OSError as error:  # kept, and tried again next pass
            log.warning("retention: photo %s… could not be deleted: %s", sha256[:12], error)
            continue
        with db.session() as session:
            angles = {
                angle
                for more in session.exec(
                    select(Sample.more_image_sha256s).where(
                        col(Sample.image_sha256) == sha256, col(Sample.created_at) < cutoff
                    )
                ).all()
                for angle in more or []
            }
            session.exec(
                update(Sample)
                .where(col(Sample.image_sha256) == sha256, col(Sample.created_at) < cutoff)
                .values(image_path=PHOTO_REMOVED)
            )
            # The plate's other angles go with it, unless a newer sample has one of them.
            angles = [a for a in angles if not session.exec(_newer_users(a, cutoff)).first()]
        for angle in angles:
            try:
                images.delete(angle)
            except OSError as error:
                log.warning("retention: photo %s… could not be deleted: %s", angle[:12], error)
        removed += 1
    if removed:
        log.info("retention: removed %d photos older than %s; their samples keep their numbers", removed,
                 cutoff.isoformat())  # fmt: skip
    return removed


class PhotoRetention:
    """The background pass: now, then every `every_s` seconds, until stopped."""

    def __init__(self, db: Database, images, days: int, every_s: float) -> None:
        self.db, self.images, self.days, self.every_s = db, images, days, every_s
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.days > 0:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            cutoff = utcnow() - timedelta(days=self.days)
            try:
                while await asyncio.to_thread(remove_old_photos, self.db, self.images, cutoff) == BATCH:
                    pass  # a backlog: the next batch at once
            except Exception:  # a database outage: tried again next pass, never ends the loop
                log.exception("retention pass failed; trying again in %.0f s", self.every_s)
            await asyncio.sleep(self.every_s)
