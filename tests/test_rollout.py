"""Versions on live traffic, through real processes: a better challenger is promoted, a worse one
retired, a served version that turns bad is rolled back by itself, and no request fails meanwhile."""

import asyncio
import hashlib

import numpy as np
import pytest
from sqlmodel import select

from foodcal.rpc import metrics
from foodcal.store import Rollout, Sample
from foodcal.v1 import common_pb2, gateway_pb2
from gateway.challenger import Challenger
from tests.conftest import auth, photo
from tests.openai_stub import GOOD_ANSWER, answer
from tests.trainer_helpers import add_samples, start_run, watch
from trainer.backfill import current_classifier

NUTRIENTS = ("calories_kcal", "proteins_g", "fats_g", "carbs_g")
TAUGHT = tuple(float(GOOD_ANSWER[n]) for n in NUTRIENTS)  # what the stub answers by default
FAST = {"rollout_check_interval_s": 0.2}


def _values(n) -> tuple[float, ...]:
    return tuple(getattr(n, name) for name in NUTRIENTS)


def photos(count: int, offset: int) -> list[bytes]:
    return [photo(color=(offset + i, 255 - i, (7 * i) % 256), size=(96, 72)) for i in range(count)]


class Traffic:
    """Sends photos one after another in the background; every answer and failure is kept."""

    def __init__(self, app) -> None:
        self.app, self.answers, self.failures = app, [], []
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.task = asyncio.create_task(self._send())

    async def _send(self) -> None:
        while True:
            image = await self.queue.get()
            try:
                request = gateway_pb2.AnalyzeMealRequest(image=image)
                self.answers.append(await self.app.gateway.AnalyzeMeal(request, metadata=auth(), timeout=30))
            except Exception as error:  # counted, never raised: the test asserts there are none
                self.failures.append(error)
            finally:
                self.queue.task_done()

    async def send(self, images: list[bytes]) -> None:
        for image in images:
            self.queue.put_nowait(image)
        await self.queue.join()

    async def stop(self) -> None:
        self.task.cancel()


def rollout_of(app, version: int) -> Rollout:
    with app.db.session() as session:
        return session.exec(select(Rollout).where(Rollout.version == version)).one()


async def until_state(app, version: int, state: str, traffic: Traffic, images: list[bytes]) -> Rollout:
    """Keep traffic flowing, a photo at a time, until the rollout of `version` reaches `state`."""
    for image in images:
        if rollout_of(app, version).state == state:
            break
        await traffic.send([image])
        await asyncio.sleep(0.05)
    for _ in range(100):  # the last labels may still be judged
        if rollout_of(app, version).state == state:
            break
        await asyncio.sleep(0.1)
    rollout = rollout_of(app, version)
    assert rollout.state == state, rollout.decisions
    return rollout


async def train_constant_version(app, torchserve) -> common_pb2.TrainingRun:
    """Version 1 learns the stub's numbers for every photo (v0 is the table's, far from them)."""
    classifier = await current_classifier(torchserve.client)
    add_samples(app.db, 120, classifier, lambda embedding, probabilities: TAUGHT)
    started = await start_run(app)
    return (await watch(app, started.run_id))[-1].outcome


async def table_answer(torchserve, images: list[bytes]) -> dict:
    """The mean of what v0 (the table) answers for `images`: labels that make v0 the better one."""
    values = []
    for image in images:
        result = await torchserve.client.classify(image)
        values.append(
            (await torchserve.client.predict_nutrition(result.embedding, result.probabilities, 0)).values
        )
    mean = np.mean(values, axis=0)
    table = dict(zip(NUTRIENTS, (float(v) for v in mean), strict=True))
    item = {"name": "the plate", "grams": GOOD_ANSWER["portion_g"], **table}
    return {**table, "items": [item]}


async def served_version(app) -> int:
    response = await app.gateway.ListModelVersions(
        gateway_pb2.GatewayServiceListModelVersionsRequest(), metadata=auth()
    )
    return response.served_version


async def test_a_better_shadow_challenger_is_promoted_while_the_champion_answers(system, torchserve):
    app = await system(rollout="shadow", rollout_min_samples=20, **FAST)
    outcome = await train_constant_version(app, torchserve)
    assert outcome.status == common_pb2.TRAINING_RUN_STATUS_CHALLENGER, outcome.message
    assert outcome.result_version == 1 and "live as a shadow challenger of v0" in outcome.message
    assert await served_version(app) == 0

    traffic = Traffic(app)
    rollout = await until_state(app, 1, "served", traffic, photos(60, 0))
    await traffic.send(photos(3, 100))  # answered by v1 now, without a failure
    await traffic.stop()

    assert not traffic.failures
    assert await served_version(app) == 1
    decisions = [d["decision"] for d in rollout.decisions]
    assert decisions == ["challenger", "promoted"]
    evidence = rollout.decisions[-1]["evidence"]
    assert evidence["samples"] >= 20 and evidence["version_score"] < evidence["baseline_score"]
    # Shadow: v0's numbers were shown; v1's were stored beside them, close to what it was taught.
    shadowed = [a for a in traffic.answers if a.model_versions.nutrition == 0]
    assert len(shadowed) >= 20
    with app.db.session() as session:
        sample = session.get(Sample, shadowed[0].sample_id)
    assert sample.paired_model_version == 1 and sample.values("pred") == pytest.approx(
        _values(shadowed[0].own_prediction)
    )
    assert sample.values("paired") == pytest.approx(TAUGHT, rel=0.1)
    stored = await app.gateway.GetSample(gateway_pb2.GetSampleRequest(sample_id=sample.id), metadata=auth())
    assert stored.sample.paired_prediction_version == 1
    assert _values(stored.sample.paired_prediction) == pytest.approx(sample.values("paired"))
    assert traffic.answers[-1].model_versions.nutrition == 1

    report = await app.gateway.GetQualityReport(
        gateway_pb2.GatewayServiceGetQualityReportRequest(), metadata=auth()
    )
    v1 = next(v for v in report.versions if v.version == 1)
    assert [d.decision for d in v1.decisions] == ["challenger", "promoted"]
    assert v1.decisions[-1].samples == evidence["samples"] and v1.live.overall.samples >= 20


async def test_a_worse_split_challenger_is_retired_and_each_photo_keeps_its_side(system, torchserve, stub):
    # The share and stickiness of a split, not its latency bound (tests/test_challenger_latency.py):
    # on a busy test machine the challenger often answers 50 ms after the champion, and is dropped.
    app = await system(
        rollout="split",
        rollout_split_percent=50,
        rollout_min_samples=20,
        rollout_challenger_grace_s=1.0,  # the most the setting allows: stickiness here, not the bound
        **FAST,
    )
    images = photos(80, 0)
    table = await table_answer(torchserve, images[:10])
    outcome = await train_constant_version(app, torchserve)
    assert outcome.status == common_pb2.TRAINING_RUN_STATUS_CHALLENGER, outcome.message

    # A replica that lost the challenger (a restart comes back with v0 only) gets it again.
    client = torchserve.client
    await client.unregister(client.replicas[0], "nutrition", "1")
    for _ in range(100):
        if "1" in await client.registered_versions():
            break
        await asyncio.sleep(0.1)
    assert "1" in await client.registered_versions()

    stub.reset(default=answer(**table))  # live labels agree with the table: v1 is worse
    traffic = Traffic(app)
    rollout = await until_state(app, 1, "retired", traffic, images)
    await traffic.send(images[:2])  # the champion answers, the challenger is gone
    await traffic.stop()

    assert not traffic.failures and await served_version(app) == 0
    assert "not clearly better on live traffic" in rollout.decisions[-1]["reason"]
    split = Challenger(1, 0, "split", 50.0)
    answered, dropped = [], 0
    with app.db.session() as session:
        for response in traffic.answers[:-2]:
            sample = session.get(Sample, response.sample_id)
            if sample.paired_model_version is None:  # the challenger was slow or failing: dropped
                assert response.model_versions.nutrition == 0
                dropped += 1
                continue
            # Sticky by image hash, and the other version's numbers stored beside the shown ones.
            assert split.answers(sample.image_sha256) == (response.model_versions.nutrition == 1)
            assert {sample.pred_model_version, sample.paired_model_version} == {0, 1}
            answered.append(response.model_versions.nutrition == 1)
    # A loaded machine drops more (the challenger later than the grace): the split is judged on the
    # photos both versions answered, and most must be those.
    assert dropped <= len(traffic.answers[:-2]) // 4, dropped
    assert 0.25 < sum(answered) / len(answered) < 0.75
    await asyncio.sleep(4)  # the grace before the challenger leaves TorchServe
    assert "1" not in await torchserve.client.registered_versions()


async def test_a_served_version_that_turns_bad_on_live_traffic_is_rolled_back(system, torchserve, stub):
    app = await system(rollback_min_samples=10, rollback_window=15, **FAST)
    rollbacks_before = metrics.ROLLOUTS.labels("rolled_back")._value.get()
    images = photos(70, 0)
    table = await table_answer(torchserve, images[:10])
    outcome = await train_constant_version(app, torchserve)
    assert outcome.status == common_pb2.TRAINING_RUN_STATUS_DEPLOYED, outcome.message
    assert await served_version(app) == 1

    traffic = Traffic(app)
    await traffic.send(images[:15])  # the labels still agree with what v1 learned: kept
    await asyncio.sleep(0.6)
    assert rollout_of(app, 1).state == "served"
    stub.reset(default=answer(**table))  # the labeler changes its answers mid-stream
    rollout = await until_state(app, 1, "rolled_back", traffic, images[15:])
    await traffic.send(images[:2])
    await traffic.stop()

    assert not traffic.failures and await served_version(app) == 0
    assert [d["decision"] for d in rollout.decisions] == ["deployed", "rolled_back"]
    assert "clearly worse than v0" in rollout.decisions[-1]["reason"]
    assert metrics.ROLLOUTS.labels("rolled_back")._value.get() == rollbacks_before + 1
    assert traffic.answers[-1].model_versions.nutrition == 0


def test_a_split_sends_the_configured_share_of_photos_and_shadow_none():
    split = Challenger(2, 1, "split", 10.0)
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20_000)]
    share = sum(map(split.answers, hashes)) / len(hashes)
    assert 0.09 < share < 0.11
    assert not any(Challenger(2, 1, "shadow", 10.0).answers(h) for h in hashes[:500])
