"""The label queue's claims and leases: no sample claimed twice, a slow call keeps its claim, a
dead worker's claim expires."""

import asyncio

from sqlmodel import select

from foodcal.store import ImageStore, LabelStatus, Sample
from foodcal.store.tables import utcnow
from foodcal.v1 import common_pb2, labeler_pb2
from gateway.label_queue import LabelQueue
from gateway.labels import RetryPolicy
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


async def test_a_slow_label_keeps_its_lease_and_a_dead_workers_lease_expires(db, tmp_path):
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
    answered = asyncio.Event()

    async def slow_labeler(request):  # a ChatGPT call three leases long
        await asyncio.sleep(1.5)
        answered.set()
        return labeler_pb2.LabelMealResponse(
            label=common_pb2.Label(
                source=common_pb2.NUTRITION_SOURCE_CHATGPT,
                dish="pizza",
                nutrition=common_pb2.Nutrition(calories_kcal=500, proteins_g=20, fats_g=20, carbs_g=60),
            )
        )

    slow = LabelQueue(db, slow_labeler, policy, "slow", lease_s=0.6, concurrency=1)
    rival = LabelQueue(db, None, policy, "rival", lease_s=60.0)
    working = asyncio.create_task(slow.run_once())
    while not answered.is_set():  # renewed in time: the rival never gets the sample in flight
        await asyncio.sleep(0.05)
        assert await asyncio.to_thread(rival.claim, 1) == [ids[1]]  # only the other, idle sample
        await asyncio.to_thread(rival.release_own_claims)
    assert await working == 1
    with db.session() as session:
        statuses = sorted(s.label_status for s in session.exec(select(Sample)).all())
    assert statuses == sorted([LabelStatus.LABELED, LabelStatus.PENDING])

    dying = LabelQueue(db, slow_labeler, policy, "dying", lease_s=0.6, concurrency=1)
    working = asyncio.create_task(dying.run_once())
    await asyncio.sleep(0.3)
    working.cancel()  # the process died mid-call: no more renewals
    assert rival.claim(1) == []  # its lease still holds...
    await asyncio.sleep(0.8)
    assert rival.claim(1) == [ids[1]]  # ...and then expires


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
    assert sample.label_claimed_by is None
    assert sample.label_next_attempt_at is None or sample.label_next_attempt_at <= utcnow()
