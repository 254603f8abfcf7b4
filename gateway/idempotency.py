"""Idempotent AnalyzeMeal: a retry with the same `request_id` from the same client returns the
first answer and stores nothing new.

The id is claimed in the database before any work (so gateways on one database agree), the
answer is recorded with it, and a retry that arrives while the first call still runs waits for
that answer. The work runs shielded from the caller's cancellation: a client that times out and
retries gets the answer of the call it gave up on, not a second sample. A claim whose call died
with its gateway is taken over after STALE_CLAIM_S; ids are kept for RETENTION_S.

A replay or a wait spends the client's calls bucket (gateway/request_limits.py), and at most
MAX_WAITERS_PER_CLIENT of a client's calls wait at once in a gateway: they wait on the running call
itself when it runs here, else poll the database at a backoff up to MAX_POLL_S.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import functools
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
from sqlalchemy import bindparam, delete, insert, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from foodcal.rpc.errors import abort
from foodcal.store import AnalyzeRequest, Database
from foodcal.store.db import DatabaseUnavailable
from foodcal.store.images import sha256_of
from foodcal.store.tables import utcnow
from foodcal.v1 import gateway_pb2
from gateway.deadlines import Budget
from gateway.rate_limit import RateLimiter
from gateway.request_limits import calls_key, spend

log = logging.getLogger(__name__)

MAX_REQUEST_ID_CHARS = 128
STALE_CLAIM_S = 300.0  # longer than any AnalyzeMeal (LABELER_TIMEOUT_S and TorchServe included)
RETENTION_S = 24 * 3600.0
PURGE_INTERVAL_S = 60.0
WAIT_POLL_S = 0.2  # the first poll for a call running in another gateway; doubled each time
MAX_POLL_S = 2.0
MAX_WAIT_S = 30.0
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


_BY_HASH = ("image", "request_id")  # the photo counts by its sha256; the id not at all

# Built once: building a statement per call costs more CPU than the write (tests/test_hot_path.py).
_REQUESTS = AnalyzeRequest.__table__
_CLAIM = insert(_REQUESTS)
_RECORD = update(_REQUESTS).where(
    _REQUESTS.c.owner == bindparam("key_owner"), _REQUESTS.c.request_id == bindparam("key_request_id")
)


def fingerprint(request: gateway_pb2.AnalyzeMealRequest, image_sha256: str) -> str:
    """The request without its id: the same id with another photo or note is refused. The photo
    counts by its sha256, the one hash of it this request makes (the image store reuses it)."""
    rest = {field.name: value for field, value in request.ListFields() if field.name not in _BY_HASH}
    serialized = gateway_pb2.AnalyzeMealRequest(**rest).SerializeToString(deterministic=True)
    return hashlib.sha256(image_sha256.encode() + serialized).hexdigest()


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


def idempotent(analyze):
    """Wraps GatewayServicer.AnalyzeMeal; needs `self.request_ids` and `self._caller`."""

    @functools.wraps(analyze)
    async def wrapper(self, request, context, **checked):
        """`checked`: what the caller already checked of the request (the cleaned note)."""
        store: RequestIds | None = self.request_ids
        if not request.request_id or store is None:
            return await analyze(self, request, context, **checked)
        if len(request.request_id) > MAX_REQUEST_ID_CHARS:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request_id is at most {MAX_REQUEST_ID_CHARS} characters (got {len(request.request_id)})",
                "REQUEST_ID_TOO_LONG",
            )
        caller = self._caller(context)
        owner, request_id = caller.identity, request.request_id

        def hash_and_claim() -> tuple[str, str, Claim]:  # one thread hop for both
            image_sha256 = sha256_of(request.image)
            digest = fingerprint(request, image_sha256)
            return image_sha256, digest, store.claim(owner, request_id, digest)

        try:
            image_sha256, digest, claim = await asyncio.to_thread(hash_and_claim)
            if claim.outcome in (Outcome.ANSWERED, Outcome.RUNNING) and store.calls and not caller.admin:
                await spend(context, store.calls, calls_key(caller), "calls")
            if claim.outcome is Outcome.RUNNING:
                if store.waiting[owner] >= store.max_waiters:
                    await abort(
                        context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"{store.max_waiters} calls of this token already wait for a running request_id; "
                        "retry later with the same id", "TOO_MANY_WAITING", 1.0,
                    )  # fmt: skip
                store.waiting[owner] += 1
                try:
                    claim = await _wait(store, owner, request_id, digest, Budget.of(context))
                finally:
                    store.waiting[owner] -= 1
                    if not store.waiting[owner]:
                        del store.waiting[owner]
        except DatabaseUnavailable:
            await abort(
                context, grpc.StatusCode.UNAVAILABLE, "the database is unavailable; try again shortly",
                "DATABASE_UNAVAILABLE", 1.0,
            )  # fmt: skip
        if claim.outcome is Outcome.ANSWERED:
            log.info("request_id replayed: the first answer, nothing stored")
            return gateway_pb2.AnalyzeMealResponse.FromString(claim.response)
        if claim.outcome is Outcome.OTHER_REQUEST:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "this request_id was already used for a different request; use a new id per photo",
                "REQUEST_ID_REUSED",
            )
        if claim.outcome is Outcome.RUNNING:
            await abort(
                context,
                grpc.StatusCode.ABORTED,
                "a call with this request_id is still running; retry with the same id",
                "REQUEST_IN_PROGRESS",
                1.0,
            )

        def remember(connection, response) -> None:  # in the sample's transaction: both or neither
            store.record(connection, owner, request_id, response)

        async def work():
            try:
                return await analyze(
                    self, request, context, **checked, image_sha256=image_sha256, remember=remember
                )
            except BaseException:  # an id already answered is kept (release skips it)
                await asyncio.to_thread(store.release, owner, request_id)
                raise

        # A caller that gives up (deadline, cancel) does not stop the work: its retry gets this answer.
        task = asyncio.ensure_future(work())
        store.running[owner, request_id] = task

        def done(finished: asyncio.Future) -> None:
            store.running.pop((owner, request_id), None)
            finished.cancelled() or finished.exception()  # retrieved: never "never retrieved"

        task.add_done_callback(done)
        return await asyncio.shield(task)

    return wrapper


async def _wait(store: RequestIds, owner: str, request_id: str, digest: str, budget: Budget) -> Claim:
    """Until the running call answers (or fails: then this call claims the id and does the work)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget.timeout(MAX_WAIT_S)
    running = store.running.get((owner, request_id))
    if running is not None:  # here: its end, not the database, says when to look
        await asyncio.wait([running], timeout=deadline - loop.time())
    claim, poll_s = Claim(Outcome.RUNNING), WAIT_POLL_S
    while claim.outcome is Outcome.RUNNING and loop.time() < deadline:
        if running is None:
            await asyncio.sleep(min(poll_s, max(deadline - loop.time(), 0.0)))
            poll_s = min(poll_s * 2, MAX_POLL_S)
        running = None
        claim = await asyncio.to_thread(store.claim, owner, request_id, digest)
    return claim
