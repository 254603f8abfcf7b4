"""Against a real TorchServe (demo classifier), started once per test session."""

import asyncio
import os
import socket
import time

import numpy as np
import psutil
import pytest

from model_store import ports, server, torchserve_config
from model_store.archive import build_nutrition_mar, nutrition_mar_name
from model_store.reference import food101_labels, lookup
from model_store.server import wait_until_ready
from model_store.torchserve_client import ModelServerError, TorchServeClient
from tests.conftest import free_port, photo, start_torchserve
from trainer.hot_swap import NutritionReplicas


async def test_both_models_are_registered(torchserve):
    assert set(await torchserve.client.list_models()) == {"food101", "nutrition"}
    assert await torchserve.client.served_version() == "0"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
async def test_photo_is_classified_into_food101_labels_with_embedding(torchserve, fmt):
    result = await torchserve.client.classify(photo(fmt=fmt))
    assert len(result.dishes) == 5
    assert all(label in food101_labels() for label, _ in result.dishes)
    assert result.probabilities.shape == (101,)
    assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-4)
    assert result.embedding.shape == (48,)  # the demo checkpoint's hidden size
    assert result.demo and result.classifier.startswith("demo@")
    nutrition = await torchserve.client.predict_nutrition(result.embedding, result.probabilities)
    assert nutrition.version == 0
    assert all(np.isfinite(v) and v >= 0 for v in nutrition.values)


async def test_nutrition_v0_through_torchserve_equals_the_table(torchserve):
    one_hot = np.zeros(101, "<f4")
    one_hot[food101_labels().index("sushi")] = 1
    result = await torchserve.client.predict_nutrition(np.zeros(48, "<f4"), one_hot, version=0)
    assert result.values == pytest.approx(lookup("sushi").nutrients, rel=1e-5)


async def test_unknown_version_is_a_clear_error(torchserve):
    with pytest.raises(ModelServerError, match=r"not registered|not found"):
        await torchserve.client.predict_nutrition(np.zeros(48, "<f4"), np.zeros(101, "<f4"), version=99)


async def test_unreachable_model_server_is_unavailable_quickly():
    port = free_port()
    client = TorchServeClient([f"127.0.0.1:{port}"], [f"127.0.0.1:{port}"], timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(ModelServerError) as raised:
        await client.classify(photo())
    await client.close()
    assert raised.value.unavailable
    assert time.monotonic() - started < 3.0


def test_free_ports_sit_below_the_ephemeral_port_range_and_never_repeat():
    low = ports.ephemeral_port_range()[0]
    handed = [free_port() for _ in range(50)]
    assert len(set(handed)) == 50 and max(handed) < low


def test_torchserve_starts_again_on_new_ports_when_one_was_taken_before_java_bound_it(
    model_store, tmp_path, monkeypatch
):
    with socket.socket() as squatter:  # what an outgoing connection did to a port in CI
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        fresh = torchserve_config.free_port
        handed = iter([taken])
        monkeypatch.setattr(torchserve_config, "free_port", lambda: next(handed, None) or fresh())
        process = server.start_on_free_ports(model_store, tmp_path)
        try:
            config = process.config
            assert taken not in (config.grpc_inference_port, config.http_port, config.metrics_port)
            output = (process.log_dir / "torchserve.out").read_text()
            assert "Failed to bind" in output and output.count("Model server started.") == 1
            assert process.alive()
        finally:
            process.stop()


async def test_registering_outside_the_model_store_is_refused(torchserve):
    client = torchserve.client
    for url in ("file:///etc/passwd", "http://example.com/evil.mar", "../../etc/passwd"):
        with pytest.raises(ModelServerError):
            await client.register(client.replicas[0], url)
    assert set(await client.list_models()) == {"food101", "nutrition"}


def test_every_listener_is_on_loopback(torchserve):
    java = [
        p
        for p in psutil.Process(torchserve.process.process.pid).children(recursive=True)
        if "java" in p.name()
    ]
    assert java, "java not found under the torchserve process"
    listening = [c for c in java[0].net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert len(listening) >= 5
    assert {c.laddr.ip.removeprefix("::ffff:") for c in listening} == {"127.0.0.1"}


async def _client_loop(client, stop: asyncio.Event, log: list, errors: list):
    embedding, probabilities = np.zeros(48, "<f4"), np.full(101, 1 / 101, "<f4")
    while not stop.is_set():
        sent = time.monotonic()
        try:
            answer = await client.predict_nutrition(embedding, probabilities)
            log.append((sent, answer.version))
        except ModelServerError as error:
            errors.append(str(error))


@pytest.mark.usefixtures("clean_nutrition")
async def test_hot_swap_under_load_loses_nothing_and_serves_the_new_version(torchserve, model_store):
    from model_store.build import reference_model

    v1 = reference_model(model_store.parent / "checkpoints" / "food101")
    v1.table.mul_(2.0)
    build_nutrition_mar(v1, 1, model_store / nutrition_mar_name(1))
    client = torchserve.client
    stop, log, errors = asyncio.Event(), [], []
    workers = [asyncio.create_task(_client_loop(client, stop, log, errors)) for _ in range(4)]
    await asyncio.sleep(1.0)
    swap_started = time.monotonic()
    previous = await NutritionReplicas(client).hot_swap(
        nutrition_mar_name(1), 1, embedding_dim=48, drain_s=0.5
    )
    swapped_at = time.monotonic()
    await asyncio.sleep(1.5)
    stop.set()
    await asyncio.gather(*workers)
    assert previous == "0"
    assert errors == []
    assert len(log) > 100
    assert {version for sent, version in log if sent > swapped_at} == {1}
    assert {version for sent, version in log if sent < swap_started} == {0}  # a second of requests
    assert await client.served_version() == "1"
    assert "0" in await client.registered_versions()  # v0 stays: the baseline and USE_TRAINED_MODEL=false


@pytest.mark.usefixtures("clean_nutrition")
async def test_corrupt_archive_is_refused_and_the_old_version_keeps_serving(torchserve, model_store):
    (model_store / nutrition_mar_name(7)).write_bytes(b"PK\x03\x04 this is not a model archive")
    client = torchserve.client
    with pytest.raises(ModelServerError, match="old version is still served"):
        await NutritionReplicas(client).hot_swap(nutrition_mar_name(7), 7, embedding_dim=48)
    assert await client.served_version() == "0"
    answer = await client.predict_nutrition(np.zeros(48, "<f4"), np.full(101, 1 / 101, "<f4"))
    assert answer.version == 0


async def test_lifecycle_waits_for_real_predictions_and_stops_java_too(model_store, tmp_path):
    process = start_torchserve(model_store, tmp_path / "ts")
    config = process.config
    client = TorchServeClient([config.inference_address], [config.management_address])
    try:
        await wait_until_ready(client, process, timeout_s=180)
        assert (await client.classify(photo())).dishes
        group = os.getpgid(process.process.pid)
    finally:
        await client.close()
        process.stop()
    alive = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == group]
    assert alive == []


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_classifier_batches_with_one_worker_and_not_when_several_share_the_queue():
    from foodcal.settings import load_settings
    from model_store.build import food101_config

    def config(**overrides) -> dict:
        text = food101_config(load_settings(_env_file=None, **overrides))
        return dict(line.split(": ") for line in text.splitlines())

    assert config(food101_workers=1)["batchSize"] == "8"
    assert config(food101_workers=2)["batchSize"] == "1"
    assert config(food101_workers=2, food101_batch_size=4)["batchSize"] == "4"  # an explicit choice wins
    assert config(food101_workers=3)["minWorkers"] == config(food101_workers=3)["maxWorkers"] == "3"
