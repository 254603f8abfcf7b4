"""The label queue: each label is its own task with its own lease, bounded by the concurrency."""

import asyncio

from sqlmodel import select

from foodcal.store import ImageStore, LabelStatus, Sample
from foodcal.v1 import common_pb2, labeler_pb2
from gateway.label_queue import LabelQueue
from gateway.label_results import RetryPolicy
from tests.conftest import photo

POLICY = RetryPolicy(3, 0.1, 1.0)


def _answer() -> labeler_pb2.LabelMealResponse:
    return labeler_pb2.LabelMealResponse(
        label=common_pb2.Label(
            source=common_pb2.NUTRITION_SOURCE_CHATGPT,
            dish="pizza",
            nutrition=common_pb2.Nutrition(calories_kcal=500, proteins_g=20, fats_g=20, carbs_g=60),
        )
    )


def _pending_photos(db, images, count) -> list[str]:
    """Pending samples in creation order, each with its own stored photo."""
    ids = []
    for index in range(count):
        stored = images.put(photo(color=(index * 40, 5, 5)))
        with db.session() as session:
            sample = Sample(
                image_sha256=stored.sha256, image_path=stored.path, label_status=LabelStatus.PENDING
            )
            session.add(sample)
            ids.append(sample.id)
    return ids


def _statuses(db, ids) -> list[str]:
    with db.session() as session:
        rows = {s.id: s.label_status for s in session.exec(select(Sample)).all()}
    return [rows[i] for i in ids]


async def _until(condition, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


async def test_one_slow_label_does_not_hold_back_the_others(db, tmp_path):
    images = ImageStore(tmp_path)
    slow_id, *fast_ids = _pending_photos(db, images, 4)
    with db.session() as session:
        slow_sha = session.get(Sample, slow_id).image_sha256
    release = asyncio.Event()

    async def labeler(request):
        if request.image_sha256 == slow_sha:  # a 90-s ChatGPT call
            await release.wait()
        return _answer()

    queue = LabelQueue(db, labeler, POLICY, "worker", lease_s=30.0, poll_s=0.05, concurrency=2)
    queue.start()
    try:
        # One slot is held by the slow call; the other slot labels the other three meanwhile.
        await _until(lambda: _statuses(db, fast_ids) == [LabelStatus.LABELED] * 3)
        assert _statuses(db, [slow_id]) == [LabelStatus.PENDING]
        release.set()
        await _until(lambda: _statuses(db, [slow_id]) == [LabelStatus.LABELED])
    finally:
        await queue.stop()


async def test_concurrency_bounds_the_labels_in_flight(db, tmp_path):
    images = ImageStore(tmp_path)
    ids = _pending_photos(db, images, 6)
    in_flight, peak, release = 0, 0, asyncio.Event()

    async def labeler(request):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await release.wait()
        in_flight -= 1
        return _answer()

    queue = LabelQueue(db, labeler, POLICY, "worker", lease_s=30.0, poll_s=0.05, concurrency=3)
    queue.start()
    try:
        await _until(lambda: in_flight == 3)
        await asyncio.sleep(0.3)  # several polls: nothing more may start while the slots are full
        assert peak == 3
        release.set()
        await _until(lambda: _statuses(db, ids) == [LabelStatus.LABELED] * 6)
        assert peak == 3
    finally:
        await queue.stop()


async def test_a_label_that_raises_leaves_the_others_running_with_their_leases(db, tmp_path):
    images = ImageStore(tmp_path)
    broken_id, slow_id = _pending_photos(db, images, 2)
    with db.session() as session:
        broken_sha = session.get(Sample, broken_id).image_sha256
    answered = asyncio.Event()

    async def labeler(request):
        if request.image_sha256 == broken_sha:
            raise RuntimeError("a bug in one call")
        await asyncio.sleep(1.5)  # three leases long
        answered.set()
        return _answer()

    worker = LabelQueue(db, labeler, POLICY, "worker", lease_s=0.6, concurrency=2)
    rival = LabelQueue(db, None, POLICY, "rival", lease_s=60.0)
    working = asyncio.create_task(worker.run_once())
    while not answered.is_set():  # the slow label's lease is still renewed: never claimed twice
        await asyncio.sleep(0.05)
        assert slow_id not in await asyncio.to_thread(rival.claim, 2)
        await asyncio.to_thread(rival.release_own_claims)
    assert await working == 2
    assert _statuses(db, [slow_id]) == [LabelStatus.LABELED]
    with db.session() as session:
        broken = session.get(Sample, broken_id)
    # The raising call counts as a failed attempt and is retried, not left claimed.
    assert broken.label_status == LabelStatus.PENDING and broken.label_attempts == 1
    assert "a bug in one call" in broken.label_error and broken.label_claimed_by is None
