"""The request ids of AnalyzeMeal (table `analyze_requests`): claimed before any work, answered
in the sample's own transaction, released when the call fails.

The id is claimed in the database (so gateways on one database agree). A claim whose call died
with its gateway is taken over after STALE_CLAIM_S; ids are kept for RETENTION_S. The step that
uses them, in AnalyzeMeal's own body, is gateway/idempotency.py.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, delete, insert, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from foodcal.store import AnalyzeRequest, Database
from foodcal.store.tables import utcnow
from foodcal.v1 import gateway_pb2
from gateway.rate_limit import RateLimiter

STALE_CLAIM_S = 300.0  # longer than any AnalyzeMeal (LABELER_TIMEOUT_S and TorchServe included)
RETENTION_S = 24 * 3600.0
PURGE_INTERVAL_S = 60.0
MAX_WAITERS_PER_CLIENT = 4


class Outcome(enum.Enum):
    NEW = "new"  # this call does the work
    ANSWERED = "answered"
    RUNNING = "running"  # another call with this id is still at work
    OTHER_REQUEST = "other_request"  # the id came with a different request


@dataclass
class Claim:
    outcome: Outcome
    response: bytes | None = None


@dataclass(frozen=True)
class RequestKey:
    """A request id as stored: ids belong to a client, so its owner is part of the key."""

    owner: str
    request_id: str


# Built once: building a statement per call costs more CPU than the write (tests/test_hot_path.py).
_REQUESTS = AnalyzeRequest.__table__
_CLAIM = insert(_REQUESTS)
_RECORD = update(_REQUESTS).where(
    _REQUESTS.c.owner == bindparam("key_owner"), _REQUESTS.c.request_id == bindparam("key_request_id")
)


class RequestIds:
    def __init__(
        self, db: Database, calls: RateLimiter | None = None, max_waiters: int = MAX_WAITERS_PER_CLIENT
    ) -> None:
        """`calls`: the bucket a client's replays and waits spend."""
        self.db, self.calls, self.max_waiters = db, calls, max_waiters
        self._next_purge = 0.0  # time.monotonic() of the next sweep of expired ids
        self.running: dict[tuple[str, str], asyncio.Future] = {}  # the calls at work in this gateway
        self.waiting: collections.Counter[str] = collections.Counter()  # waiting calls per owner

    def claim(self, owner: str, request_id: str, digest: str) -> Claim:
        """One transaction for a new id (the usual case): the insert itself is the check."""
        now = utcnow()
        self._purge_expired(now)
        for _ in range(3):  # a race with another gateway's first claim is lost at most once
            try:
                row = {"owner": owner, "request_id": request_id, "request_sha256": digest}
                with self.db.transaction() as connection:
                    connection.execute(_CLAIM, {**row, "created_at": now, "claimed_at": now})
                return Claim(Outcome.NEW)
            except IntegrityError:
                pass  # the id is known: read it
            with self.db.session() as session:
                row = session.get(AnalyzeRequest, (owner, request_id))
                if row is None:  # released (or expired and swept) in between: claim it again
                    continue
                if _aware(row.created_at) < now - timedelta(seconds=RETENTION_S):
                    session.delete(row)
                    continue
                return self._existing(session, row, digest, now)
        return Claim(Outcome.RUNNING)  # pragma: no cover

    def _purge_expired(self, now: datetime) -> None:
        """Ids past RETENTION_S, swept at most once per PURGE_INTERVAL_S, not on every claim."""
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + PURGE_INTERVAL_S
        with self.db.session() as session:
            cutoff = now - timedelta(seconds=RETENTION_S)
            session.connection().execute(delete(AnalyzeRequest).where(AnalyzeRequest.created_at < cutoff))

    def _existing(self, session, row: AnalyzeRequest, digest: str, now) -> Claim:
        if row.request_sha256 != digest:
            return Claim(Outcome.OTHER_REQUEST)
        if row.response is not None:
            return Claim(Outcome.ANSWERED, row.response)
        if _aware(row.claimed_at) > now - timedelta(seconds=STALE_CLAIM_S):
            return Claim(Outcome.RUNNING)
        taken = session.connection().execute(
            update(AnalyzeRequest)
            .where(
                AnalyzeRequest.owner == row.owner,
                AnalyzeRequest.request_id == row.request_id,
                AnalyzeRequest.claimed_at == row.claimed_at,
                AnalyzeRequest.response.is_(None),
            )
            .values(claimed_at=now)
        )
        return Claim(Outcome.NEW if taken.rowcount == 1 else Outcome.RUNNING)

    @staticmethod
    def record(
        connection: Connection, owner: str, request_id: str, response: gateway_pb2.AnalyzeMealResponse
    ) -> None:
        """The answer, in the caller's transaction: AnalyzeMeal writes it with its sample."""
        connection.execute(
            _RECORD,
            dict(
                key_owner=owner, key_request_id=request_id, sample_id=response.sample_id,
                response=response.SerializeToString(),
            ),
        )  # fmt: skip

    def release(self, owner: str, request_id: str) -> None:
        """The call failed: nothing was stored, so a retry may do the work again."""
        with self.db.session() as session:
            session.connection().execute(
                delete(AnalyzeRequest).where(
                    AnalyzeRequest.owner == owner,
                    AnalyzeRequest.request_id == request_id,
                    AnalyzeRequest.response.is_(None),
                )
            )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite drops the zone
