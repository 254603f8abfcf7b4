"""Idempotent AnalyzeMeal, as explicit steps in its body: a retry with the same `request_id` from
the same client returns the first answer and stores nothing new.

`claim_request_id` hashes the plate's photos and claims the id (gateway/request_ids.py) before any
work; a retry that arrives while the first call still runs waits for that answer. `shielded` runs
the work shielded from the caller's cancellation: a client that times out and retries gets the
answer of the call it gave up on, not a second sample. The answer itself is written with the sample
(gateway/sample_writes.py).

A replay or a wait spends the client's calls bucket (gateway/request_limits.py), and at most
MAX_WAITERS_PER_CLIENT of a client's calls wait at once in a gateway: they wait on the running call
itself when it runs here, else poll the database at a backoff up to MAX_POLL_S.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass

import grpc

from foodcal.rpc.errors import abort
from foodcal.store.db import DatabaseUnavailable
from foodcal.store.images import sha256_of
from foodcal.v1 import gateway_pb2
from gateway.auth import Caller
from gateway.deadlines import Budget
from gateway.plate_photos import PlateHashes
from gateway.request_ids import Claim, Outcome, RequestIds, RequestKey
from gateway.request_limits import calls_key, spend

log = logging.getLogger(__name__)

MAX_REQUEST_ID_CHARS = 128
WAIT_POLL_S = 0.2  # the first poll for a call running in another gateway; doubled each time
MAX_POLL_S = 2.0
MAX_WAIT_S = 30.0

_BY_HASH = ("image", "more_images", "request_id")  # the photos count by their sha256s; the id not at all


@dataclass(frozen=True)
class ClaimedId:
    """A request id this call holds: it does the work and records its answer under `key`, unless
    `replay` is the first call's answer (then there is nothing to do)."""

    key: RequestKey
    hashes: PlateHashes
    replay: gateway_pb2.AnalyzeMealResponse | None = None


def fingerprint(request: gateway_pb2.AnalyzeMealRequest, hashes: PlateHashes) -> str:
    """The request without its id: the same id with another photo or note is refused. Each photo
    counts by its sha256, the one hash of it this request makes (the image store reuses it)."""
    rest = {field.name: value for field, value in request.ListFields() if field.name not in _BY_HASH}
    serialized = gateway_pb2.AnalyzeMealRequest(**rest).SerializeToString(deterministic=True)
    photos = "".join((hashes.image, *hashes.more)).encode()  # fixed-width hex: never ambiguous
    return hashlib.sha256(photos + serialized).hexdigest()


async def claim_request_id(
    store: RequestIds | None, request: gateway_pb2.AnalyzeMealRequest, caller: Caller, context
) -> ClaimedId | None:
    """None without a request id (nothing to claim). Aborts for an id sent with another request, or
    one still running after the wait."""
    if not request.request_id or store is None:
        return None
    if len(request.request_id) > MAX_REQUEST_ID_CHARS:
        await abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"request_id is at most {MAX_REQUEST_ID_CHARS} characters (got {len(request.request_id)})",
            "REQUEST_ID_TOO_LONG",
        )
    key = RequestKey(caller.identity, request.request_id)

    def hash_and_claim() -> tuple[PlateHashes, str, Claim]:  # one thread hop for both
        hashes = PlateHashes(sha256_of(request.image), tuple(map(sha256_of, request.more_images)))
        digest = fingerprint(request, hashes)
        return hashes, digest, store.claim(key.owner, key.request_id, digest)

    try:
        hashes, digest, claim = await asyncio.to_thread(hash_and_claim)
        if claim.outcome in (Outcome.ANSWERED, Outcome.RUNNING) and store.calls and not caller.admin:
            await spend(context, store.calls, calls_key(caller), "calls")
        if claim.outcome is Outcome.RUNNING:
            claim = await _wait_capped(store, key, digest, context)
    except DatabaseUnavailable:
        await abort(
            context, grpc.StatusCode.UNAVAILABLE, "the database is unavailable; try again shortly",
            "DATABASE_UNAVAILABLE", 1.0,
        )  # fmt: skip
    if claim.outcome is Outcome.ANSWERED:
        log.info("request_id replayed: the first answer, nothing stored")
        return ClaimedId(key, hashes, gateway_pb2.AnalyzeMealResponse.FromString(claim.response))
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
    return ClaimedId(key, hashes)


async def shielded(store: RequestIds, key: RequestKey, work: Awaitable):
    """`work`'s result; a caller that gives up (deadline, cancel) does not stop the work: its retry
    gets this answer. A failed call releases the id (an id already answered is kept)."""

    async def released_on_failure():
        try:
            return await work
        except BaseException:
            await asyncio.to_thread(store.release, key.owner, key.request_id)
            raise

    task = asyncio.ensure_future(released_on_failure())
    store.running[key.owner, key.request_id] = task

    def done(finished: asyncio.Future) -> None:
        store.running.pop((key.owner, key.request_id), None)
        finished.cancelled() or finished.exception()  # retrieved: never "never retrieved"

    task.add_done_callback(done)
    return await asyncio.shield(task)


async def _wait_capped(store: RequestIds, key: RequestKey, digest: str, context) -> Claim:
    """At most `store.max_waiters` of a client's calls wait at once in this gateway."""
    if store.waiting[key.owner] >= store.max_waiters:
        await abort(
            context, grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"{store.max_waiters} calls of this token already wait for a running request_id; "
            "retry later with the same id", "TOO_MANY_WAITING", 1.0,
        )  # fmt: skip
    store.waiting[key.owner] += 1
    try:
        return await _wait(store, key, digest, Budget.of(context))
    finally:
        store.waiting[key.owner] -= 1
        if not store.waiting[key.owner]:
            del store.waiting[key.owner]


async def _wait(store: RequestIds, key: RequestKey, digest: str, budget: Budget) -> Claim:
    """Until the running call answers (or fails: then this call claims the id and does the work)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget.timeout(MAX_WAIT_S)
    running = store.running.get((key.owner, key.request_id))
    if running is not None:  # here: its end, not the database, says when to look
        await asyncio.wait([running], timeout=deadline - loop.time())
    claim, poll_s = Claim(Outcome.RUNNING), WAIT_POLL_S
    while claim.outcome is Outcome.RUNNING and loop.time() < deadline:
        if running is None:
            await asyncio.sleep(min(poll_s, max(deadline - loop.time(), 0.0)))
            poll_s = min(poll_s * 2, MAX_POLL_S)
        running = None
        claim = await asyncio.to_thread(store.claim, key.owner, key.request_id, digest)
    return claim
