"""More than one machine: two TorchServe replicas, two gateways sharing one PostgreSQL queue."""

import asyncio
import time

import numpy as np
import pytest
from sqlmodel import func, select

import gateway.__main__ as gateway_main
from foodcal.store import ChatGPTCall, LabelCache
from foodcal.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from model_store.archive import build_nutrition_mar, nutrition_mar_name
from model_store.build import reference_model
from model_store.server import wait_until_ready
from model_store.torchserve_client import ModelServerError, TorchServeClient
from tests.conftest import auth, free_port, photo, start_service, start_torchserve
from tests.test_gateway import wait_for_status
from trainer.hot_swap import NutritionReplicas


@pytest.fixture
async def second_replica(model_store, tmp_path, torchserve):
    process = start_torchserve(model_store, tmp_path / "replica2")
    config = process.config
    client = TorchServeClient(
        [torchserve.inference, config.inference_address],
        [torchserve.management, config.management_address],
        timeout_s=5.0,
    )
    await wait_until_ready(client, process, timeout_s=180)
    yield process, client
    await client.close()
    process.stop()


def _doubled_mar(model_store, version: int) -> str:
    model = reference_model(model_store.parent / "checkpoints" / "food101")
    model.table.mul_(float(version + 1))
    name = nutrition_mar_name(version)
    build_nutrition_mar(model, version, model_store / name)
    return name


async def _load(client, stop, log, errors):
    embedding, probabilities = np.zeros(48, "<f4"), np.full(101, 1 / 101, "<f4")
    while not stop.is_set():
        sent = time.monotonic()
        try:
            log.append((sent, (await client.predict_nutrition(embedding, probabilities)).version))
        except ModelServerError as error:
            errors.append(str(error))


@pytest.mark.usefixtures("clean_nutrition")
async def test_hot_swap_deploys_to_every_replica_under_load_with_zero_failures(second_replica, model_store):
    _, client = second_replica
    name = _doubled_mar(model_store, 1)
    stop, log, errors = asyncio.Event(), [], []
    workers = [asyncio.create_task(_load(client, stop, log, errors)) for _ in range(4)]
    await asyncio.sleep(1.0)
    await NutritionReplicas(client).hot_swap(name, 1, embedding_dim=48)
    swapped = time.monotonic()
    await asyncio.sleep(1.5)
    stop.set()
    await asyncio.gather(*workers)
    assert errors == [] and len(log) > 100
    assert {version for sent, version in log if sent > swapped} == {1}
    assert [await client.served_version(replica=i) for i in (0, 1)] == ["1", "1"]


@pytest.mark.usefixtures("clean_nutrition")
async def test_a_failing_replica_rolls_every_replica_back(second_replica, model_store):
    process, client = second_replica
    name = _doubled_mar(model_store, 2)
    process.stop()  # replica 2 dies before the swap
    with pytest.raises(ModelServerError, match=r"serves v0, .* serves an unknown version"):
        await NutritionReplicas(client).hot_swap(
            name, 2, embedding_dim=48
        )  # the report says what is served, not a guess
    assert await client.served_version(replica=0) == "0"
    assert "2" not in await client.registered_versions(replica=0)  # nothing half-deployed left behind


@pytest.mark.usefixtures("clean_nutrition")
async def test_inference_is_spread_over_the_replicas(second_replica, model_store):
    _, client = second_replica
    name = _doubled_mar(model_store, 3)
    second = client.replicas[1]  # serves v3 by default; the first replica v0: answers say who answered
    await client.register(second, name)
    await client.set_default(second, "nutrition", "3")
    embedding, probabilities = np.zeros(48, "<f4"), np.full(101, 1 / 101, "<f4")
    for _ in range(4):  # until both connections are up
        await client.predict_nutrition(embedding, probabilities)
    answers = [(await client.predict_nutrition(embedding, probabilities)).version for _ in range(40)]
    assert sorted(set(answers)) == [0, 3] and 15 <= answers.count(3) <= 25


async def test_inference_fails_over_when_a_replica_dies(second_replica):
    process, client = second_replica
    assert (await client.classify(photo())).dishes
    process.stop()
    for _ in range(6):  # round-robin would hit the dead replica every other call
        assert (await client.classify(photo())).dishes


async def test_two_gateways_share_the_label_queue_without_double_work(system, postgres_url, openai_stub):
    app = await system(db_url=postgres_url, use_own_model_instead_chatgpt=True)
    other_port = free_port()
    other = await start_service(gateway_main, app.settings, app.db, other_port)
    channel = __import__("grpc").aio.insecure_channel(f"127.0.0.1:{other_port}")
    gateways = [app.gateway, gateway_pb2_grpc.GatewayServiceStub(channel)]
    try:
        ids = []
        for index in range(10):
            request = gateway_pb2.AnalyzeMealRequest(image=photo(color=(index * 20, 50, 200)))
            ids.append((await gateways[index % 2].AnalyzeMeal(request, metadata=auth())).sample_id)
        for sample_id in ids:
            await wait_for_status(app, sample_id, common_pb2.LABEL_STATUS_LABELED)
    finally:
        await channel.close()
        await other.stop(0)
    with app.db.session() as session:
        assert session.exec(select(func.count()).select_from(ChatGPTCall)).one() == 10
        assert session.exec(select(func.coalesce(func.sum(LabelCache.hits), 0))).one() == 0
    assert openai_stub.calls == 10
