"""DeleteSample: a sample gone for good, with what only it needed.

Its row and its AnalyzeMeal request ids go in one transaction; the photo (and the plate's other
angles) and the photo's cached ChatGPT answers go only when no other sample has the same photo
(photos are stored once per sha256, and the cache is per photo). Training runs and quality reports
read the samples table, so a deleted sample is in none made after it. ChatGPT's call records (what
was paid) stay: they hold a hash, no photo and no numbers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import String, cast, delete
from sqlmodel import Session, col, select

from foodcal.store import AnalyzeRequest, Database, LabelCache, Sample
from foodcal.store.images import PHOTO_REMOVED
from foodcal.v1 import gateway_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deleted:
    sample_id: str
    photo_deleted: bool
    label_cache_entries: int

    def to_proto(self) -> gateway_pb2.DeleteSampleResponse:
        return gateway_pb2.DeleteSampleResponse(
            sample_id=self.sample_id,
            photo_deleted=self.photo_deleted,
            label_cache_entries_deleted=self.label_cache_entries,
        )


def angle_users(sha256: str):
    """Samples that have `sha256` among their other angles (a JSON list: matched as text, which
    SQLite and PostgreSQL both do; a sha256 is 64 hex characters, so it cannot match by accident)."""
    return select(Sample.id).where(cast(Sample.more_image_sha256s, String).like(f'%"{sha256}"%'))


def _unused_angles(session: Session, sample: Sample) -> list[str]:
    """The sample's other angles that no other sample has (as its photo or as an angle)."""
    unused = []
    for sha256 in sample.more_image_sha256s or []:
        users = {*session.exec(angle_users(sha256)).all(), *session.exec(
            select(Sample.id).where(Sample.image_sha256 == sha256)
        ).all()}  # fmt: skip
        if users <= {sample.id}:
            unused.append(sha256)
    return unused


def delete_sample(db: Database, images, sample_id: str, owner: str | None) -> Deleted | None:
    """None when there is no such sample, or it is another owner's (`owner` None: any owner)."""
    with db.session() as session:
        found = session.exec(select(Sample.image_sha256).where(Sample.id == sample_id)).first()
        if found is None:
            return None
        # Every sample of the photo, locked in one order: two deletes of its last two samples see
        # each other, so one of them removes the photo (PostgreSQL; SQLite has one writer at a time).
        same_photo = session.exec(
            select(Sample)
            .where(Sample.image_sha256 == found)
            .order_by(col(Sample.id))
            .with_for_update(of=Sample)  # the samples' rows: their optional parts are outer-joined
        ).all()
        sample = next((s for s in same_photo if s.id == sample_id), None)
        if sample is None or (owner is not None and sample.owner != owner):
            return None
        last_one = len(same_photo) == 1
        angles = _unused_angles(session, sample)
        session.exec(delete(AnalyzeRequest).where(col(AnalyzeRequest.sample_id) == sample_id))
        session.delete(sample)
        cache = 0
        if last_one:
            cache = session.exec(delete(LabelCache).where(col(LabelCache.image_sha256) == found)).rowcount
    photo_deleted = False
    if sample.image_path != PHOTO_REMOVED:
        for sha256 in ([found] if last_one else []) + angles:
            try:
                deleted = images.delete(sha256)
                photo_deleted = photo_deleted or (deleted and sha256 == found)
            except OSError as error:  # the row is gone: say so loudly, the photo has no sample left
                log.error("sample %s deleted, its photo %s… could not be: %s", sample_id, sha256[:12], error)
    log.info("sample %s deleted (photo %s, %d cached labels)", sample_id,
             "deleted" if photo_deleted else "kept", cache)  # fmt: skip
    return Deleted(sample_id, photo_deleted, cache)
