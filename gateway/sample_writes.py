"""AnalyzeMeal's writes: whether the owner sent this photo before, and the unit of work that saves
the sample with its answer to the request id (both or neither, in one commit).

Prebuilt Core statements on a connection: an ORM session and a statement built per request cost
more CPU than the writes themselves (~1 ms per AnalyzeMeal with the request id's claim and answer).
"""

from __future__ import annotations

from sqlalchemy import bindparam, select

from foodcal.store import Database, Sample
from foodcal.store.sample_rows import insert_sample
from foodcal.v1 import gateway_pb2
from gateway.request_ids import RequestIds, RequestKey

_SAMPLES = Sample.__table__
# The same owner's: whether another client sent this photo is none of the caller's business.
_SAME_PHOTO = (
    select(_SAMPLES.c.id)
    .where(
        _SAMPLES.c.image_sha256 == bindparam("sha256"),
        _SAMPLES.c.owner.is_not_distinct_from(bindparam("owner")),
    )
    .limit(1)
)


def sent_before(db: Database, image_sha256: str, owner: str | None) -> bool:
    """An earlier sample of this owner has the same photo (decided by samples, not files)."""
    with db.transaction() as connection:
        return connection.execute(_SAME_PHOTO, {"sha256": image_sha256, "owner": owner}).first() is not None


def save_sample(
    db: Database, sample: Sample, response: gateway_pb2.AnalyzeMealResponse, request: RequestKey | None
) -> None:
    """The sample, and the answer recorded with its request id when it has one, in one transaction:
    a retry never finds a sample without its answer, nor an answer without its sample."""
    with db.transaction() as connection:
        insert_sample(connection, sample)  # with its label job and features
        if request is not None:
            RequestIds.record(connection, request.owner, request.request_id, response)
