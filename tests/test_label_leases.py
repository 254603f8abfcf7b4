"""The label queue's claims and leases: no sample claimed twice, a slow call keeps its claim, a
dead worker's claim expires."""

import asyncio
import contextlib
from datetime import UTC, timedelta

from sqlmodel import select

from foodcal.store import ImageStore, LabelStatus, Sample
from foodcal.store.tables import utcnow
from foodcal.v1 import common_pb2, labeler_pb2
from gateway.label_queue import LabelQueue
from gateway.label_results import RetryPolicy
from tests.conftest import photo


def _pending(db, count):
    with db.session() as session:
        for index in range(count):
            session.add(
                Sample(image_sha256=f"{index:064x}", image_path="x", label_status=LabelStatus.PENDING)
            )


async def test_two_workers_never_claim_the_same_sample(db, tmp_path):
    _pending(db, 30)
    policy = RetryPolicy(3, 0.1, 1.0)
    queues = [LabelQueue(db, None, policy, f"worker-{i}") for i in range(2)]
    workers = [q for q in queues for _ in range(2)]  # two concurrent claims per worker each round
    claimed: list[tuple[str, str]] = []  # (sample, the worker whose claim returned it)
    for _ in range(20):  # concurrent rounds until the queue is empty
        claims = await asyncio.gather(*(asyncio.to_thread(q.claim, 5) for q in workers))
        claimed += [
            (sample_id, q.worker) for q, batch in zip(workers, claims, strict=True) for sample_id in batch
        ]
    assert len(claimed) == 30
    assert len({sample_id for sample_id, _ in claimed}) == 30  # nobody got a sample twice
    with db.session() as session:  # and the database agrees with every claim that was returned
        owners = dict(session.exec(select(Sample.id, Sample.label_claimed_by)).all())
    assert owners == dict(claimed)


class Clock:
    """The queue's clock (leases are compared with it), moved by the test, never by the machine."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def _until(condition) -> None:
    while not await asyncio.to_thread(condition):
        await asyncio.sleep(0.01)


def _claimed_until(db, sample_id):
    with db.session() as session:
        until = session.get(Sample, sample_id).label_claimed_until
    return until and until.replace(tzinfo=UTC)


async def test_a_slow_label_keeps_its_lease_and_a_dead_workers_lease_expires(db, tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr("gateway.label_queue.utcnow", clock)
    images = ImageStore(tmp_path)
    stored = images.put(photo())
    with db.session() as session:
        samples = [
            Sample(image_sha256=stored.sha256, image_path=stored.path, label_status=LabelStatus.PENDING)
            for _ in range(2)
        ]
        session.add_all(samples)
        ids = [sample.id for sample in samples]
    policy = RetryPolicy(3, 0.1, 1.0)
    release, asked = asyncio.Event(), []

    async def slow_labeler(request):  # a ChatGPT call that lasts until the test releases it
        asked.append(request)
        await release.wait()
        return labeler_pb2.LabelMealResponse(
            label=common_pb2.Label(
                source=common_pb2.NUTRITION_SOURCE_CHATGPT,
                dish="pizza",
                nutrition=common_pb2.Nutrition(calories_kcal=500, proteins_g=20, fats_g=20, carbs_g=60),
            )
        )

    lease_s = 0.3  # renewed every 0.1 s of real time, at the queue's clock
    slow = LabelQueue(db, slow_labeler, policy, "slow", lease_s=lease_s, concurrency=1)
    rival = LabelQueue(db, None, policy, "rival", lease_s=60.0)
    working = asyncio.create_task(slow.run_once())
    await _until(lambda: asked)
    (held,) = [i for i in ids if _claimed_until(db, i)]
    first_until = _claimed_until(db, held)
    for _ in range(3):  # three leases long: each renewal extends it from the clock's new time
        clock.advance(lease_s * 0.9)
        await _until(lambda: _claimed_until(db, held) > clock.now + timedelta(seconds=lease_s * 0.5))
        assert await asyncio.to_thread(rival.claim, 2) == [i for i in ids if i != held]  # only the idle
        await asyncio.to_thread(rival.release_own_claims)
    assert clock.now > first_until  # the first lease alone would have expired by now
    release.set()
    assert await working == 1
    with db.session() as session:
        statuses = sorted(s.label_status for s in session.exec(select(Sample)).all())
    assert statuses == sorted([LabelStatus.LABELED, LabelStatus.PENDING])

    release.clear()
    asked.clear()
    dying = LabelQueue(db, slow_labeler, policy, "dying", lease_s=lease_s, concurrency=1)
    working = asyncio.create_task(dying.run_once())
    await _until(lambda: asked)
    working.cancel()  # the process died mid-call: no more renewals
    with contextlib.suppress(asyncio.CancelledError):
        await working
    clock.advance(lease_s / 2)
    assert rival.claim(1) == []  # its lease still holds...
    clock.advance(lease_s)
    assert rival.claim(1) == [i for i in ids if i != held]  # ...and then expires


def test_expired_lease_is_claimed_again_and_own_claims_released(db, tmp_path):
    _pending(db, 1)
    policy = RetryPolicy(3, 0.1, 1.0)
    first = LabelQueue(db, None, policy, "first", lease_s=0.0)
    second = LabelQueue(db, None, policy, "second", lease_s=60.0)
    assert len(first.claim(5)) == 1
    assert len(second.claim(5)) == 1  # first's lease (0 s) expired: as if it had died
    assert first.claim(5) == []
    assert second.release_own_claims() == 1
    with db.session() as session:
        sample = session.exec(select(Sample)).one()
    assert (sample.label_claimed_by, sample.label_claimed_until) == (None, None)
    assert sample.label_next_attempt_at is None  # due at once: released, not postponed
    assert len(first.claim(5)) == 1  # and claimed again by the next worker that asks
