"""The durable labelling queue: pending labels live in the database, not in memory.

A worker claims due samples with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL; on SQLite a
conditional UPDATE, atomic because SQLite has one writer), asks the labeler, and writes the
outcome only while it still holds the claim. Each label is its own task with its own lease, up
to `concurrency` at once, so a slow call holds one slot and nothing else. The lease is short and
renewed every third of it while the label is in flight, so a slow ChatGPT call keeps its claim,
yet a process that dies leaves a lease that expires within `lease_s`: another worker, or the same
gateway after a restart, picks the sample up again. Nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta

import grpc
from sqlalchemy import or_, update
from sqlmodel import col, select

from foodcal.store import Database, LabelStatus, Sample
from foodcal.store.db import DatabaseUnavailable
from foodcal.store.tables import utcnow
from foodcal.v1 import labeler_pb2
from gateway.budget import DailyBudget
from gateway.label_results import RetryPolicy, apply_failure, apply_label

log = logging.getLogger(__name__)

# call(request, timeout=None): `timeout` caps LABELER_TIMEOUT_S with what is left of a caller's deadline
LabelCall = Callable[..., Awaitable[labeler_pb2.LabelMealResponse]]


def label_request(sample: Sample) -> labeler_pb2.LabelMealRequest:
    """The photo by its sha256, never its bytes: the labeler reads the image store itself, and only
    when no cached label answers."""
    request = labeler_pb2.LabelMealRequest(
        image_sha256=sample.image_sha256, note=sample.note, more_image_sha256s=sample.more_image_sha256s or []
    )
    for label, probability in sample.dishes[:3]:
        request.dish_hints.add(label=label, probability=probability)
    return request


def worker_name(port: int) -> str:
    """Stable per gateway instance, so a restarted gateway takes its own leases back at once."""
    return f"{socket.gethostname()}:{port}"


class LabelQueue:
    def __init__(
        self,
        db: Database,
        call_labeler: LabelCall,
        policy: RetryPolicy,
        worker: str,
        lease_s: float = 30.0,
        poll_s: float = 1.0,
        concurrency: int = 4,
        budget: DailyBudget | None = None,
    ) -> None:
        self.db, self.call_labeler, self.policy = db, call_labeler, policy
        self.worker, self.lease_s, self.poll_s, self.concurrency = worker, lease_s, poll_s, concurrency
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.budget = budget or DailyBudget(db, 0.0)

    # -- claiming ----------------------------------------------------------------------------

    def release_own_claims(self) -> int:
        with self.db.session() as session:
            result = session.exec(
                update(Sample)
                .where(Sample.label_claimed_by == self.worker, Sample.label_status == LabelStatus.PENDING)
                .values(label_claimed_by=None, label_claimed_until=None)
            )
            return result.rowcount

    def renew(self, sample_ids: list[str]) -> int:
        """Extend the claims this worker still holds (finished samples have none left)."""
        with self.db.session() as session:
            result = session.exec(
                update(Sample)
                .where(col(Sample.id).in_(sample_ids), Sample.label_claimed_by == self.worker)
                .values(label_claimed_until=utcnow() + timedelta(seconds=self.lease_s))
            )
            return result.rowcount

    async def _keep_leases(self, sample_ids: list[str]) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await asyncio.to_thread(self.renew, sample_ids)
            except DatabaseUnavailable as error:  # the next beat may get through before expiry
                log.warning("could not renew label leases: %s", error)

    def claim(self, limit: int) -> list[str]:
        now = utcnow()
        due = (
            select(Sample.id)
            .where(
                Sample.label_status == LabelStatus.PENDING,
                or_(col(Sample.label_next_attempt_at).is_(None), col(Sample.label_next_attempt_at) <= now),
                or_(col(Sample.label_claimed_until).is_(None), col(Sample.label_claimed_until) < now),
            )
            .order_by(col(Sample.label_uncertainty).desc(), col(Sample.created_at))
            .limit(limit)
        )
        lease = {
            "label_claimed_by": self.worker,
            "label_claimed_until": now + timedelta(seconds=self.lease_s),
        }
        claimed: list[str] = []
        with self.db.session() as session:
            if self.db.is_postgres:
                ids = session.exec(due.with_for_update(skip_locked=True)).all()
                if ids:
                    session.exec(update(Sample).where(col(Sample.id).in_(ids)).values(**lease))
                return list(ids)
            for sample_id in session.exec(due).all():
                result = session.exec(
                    update(Sample)
                    .where(
                        Sample.id == sample_id,
                        Sample.label_status == LabelStatus.PENDING,
                        or_(col(Sample.label_claimed_until).is_(None), col(Sample.label_claimed_until) < now),
                    )
                    .values(**lease)
                )
                if result.rowcount == 1:
                    claimed.append(sample_id)
        return claimed

    # -- processing --------------------------------------------------------------------------

    async def process(self, sample_id: str) -> None:
        sample = await asyncio.to_thread(self._load, sample_id)
        if sample is None:
            return
        try:
            response = await self.call_labeler(label_request(sample))
        except grpc.aio.AioRpcError as error:
            await asyncio.to_thread(self._finish, sample_id, None, (error.code(), error.details() or ""))
            return
        await asyncio.to_thread(self._finish, sample_id, response, None)

    def _load(self, sample_id: str) -> Sample | None:
        with self.db.session() as session:
            sample = session.get(Sample, sample_id)
            return sample if sample is not None and sample.label_claimed_by == self.worker else None

    def _finish(self, sample_id: str, response, failure: tuple[grpc.StatusCode, str] | None) -> None:
        with self.db.session() as session:
            sample = session.get(Sample, sample_id, with_for_update=self.db.is_postgres)
            if sample is None or sample.label_claimed_by != self.worker:
                log.warning(
                    "sample %s: lost the claim before the label arrived; left to its new owner", sample_id
                )
                return
            if failure is None:
                apply_label(sample, response)
            else:
                apply_failure(sample, *failure, self.policy)
            session.add(sample)
        log.info("sample %s: label %s (attempt %d)", sample_id, sample.label_status, sample.label_attempts)

    # -- the worker loop ---------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def _label(self, sample_id: str) -> None:
        """One claimed sample, with its own lease renewed until its outcome is written."""
        heartbeat = asyncio.create_task(self._keep_leases([sample_id]), name=f"lease-{sample_id}")
        try:
            await self.process(sample_id)
        except DatabaseUnavailable as error:  # the lease expires and the sample is claimed again
            log.warning("sample %s: label not written: %s", sample_id, error)
        except Exception as error:  # a bug in one call: counted as a failed attempt, retried
            log.exception("sample %s: labelling failed unexpectedly", sample_id)
            failure = (grpc.StatusCode.UNKNOWN, f"{type(error).__name__}: {error}")
            try:
                await asyncio.to_thread(self._finish, sample_id, None, failure)
            except Exception:
                log.exception("sample %s: could not record the failure; the lease will expire", sample_id)
        finally:
            heartbeat.cancel()

    async def run_once(self) -> int:
        """Claim up to `concurrency` due samples and label each in its own task; wait for all."""
        ids = await asyncio.to_thread(self.claim, self.concurrency)
        await asyncio.gather(*(self._label(sample_id) for sample_id in ids))
        return len(ids)

    async def _loop(self) -> None:
        """Keep up to `concurrency` labels in flight; a free slot is refilled as soon as it frees."""
        await asyncio.to_thread(self.release_own_claims)
        running: set[asyncio.Task] = set()
        try:
            while True:
                self._wake.clear()  # before claiming: a wake during the claim is not lost
                free = self.concurrency - len(running)
                if free > 0 and not await self.budget.exhausted():  # at the limit: wait for midnight
                    try:
                        claimed = await asyncio.to_thread(self.claim, free)
                    except DatabaseUnavailable as error:
                        log.warning("label queue paused: %s", error)
                        claimed = []
                    except Exception:
                        log.exception("claiming labels failed; retrying")
                        claimed = []
                    for sample_id in claimed:
                        task = asyncio.create_task(self._label(sample_id), name=f"label-{sample_id}")
                        running.add(task)
                        task.add_done_callback(running.discard)
                woken = asyncio.create_task(self._wake.wait())
                try:
                    await asyncio.wait(
                        {woken, *running}, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    woken.cancel()
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="label-queue")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
