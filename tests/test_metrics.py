"""Prometheus metrics, scraped from the real `/metrics` endpoints after real calls.

The services run as real processes (`python -m gateway`, …) around the real TorchServe, with the
OpenAI stub and LOG_FORMAT=json; each test reads every counter before and after its calls and
asserts the exact difference. The last test runs a real Prometheus (Debian's `prometheus` package;
skipped when the binary is absent, installed by `make test`) against the services and TorchServe with
the compose scrape config, and evaluates every query of the Grafana dashboard.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

import grpc
import pytest
import yaml
from sqlmodel import select

from foodcal.rpc import metrics
from foodcal.store import LabelJob, LabelStatus, Sample
from foodcal.store.tables import utcnow
from foodcal.v1 import (
    common_pb2,
    trainer_pb2,
    trainer_pb2_grpc,
)
from labeler.chatgpt import estimate_cost
from model_store.ports import free_port
from tests.conftest import INTERNAL_TOKEN, auth, photo
from tests.metrics_helpers import (
    GATEWAY,
    LABELER,
    MODEL,
    TRAINER,
    analyze,
    as_instant_query,
    dashboard_queries,
    handled,
    label_directly,
    latency_count,
    moved,
    prometheus_config,
    query,
    value,
)
from tests.openai_stub import error
from tests.trainer_helpers import add_samples, learnable
from trainer.backfill import current_classifier

pytestmark = pytest.mark.torchserve


# -- every service ---------------------------------------------------------------------------------


def test_each_service_serves_its_own_metrics_endpoint(stack):
    for name in ("gateway", "labeler", "trainer"):
        samples = stack.scrape(name)
        assert value(samples, "foodcal_service_info", service=name) == 1, name
        assert value(samples, "process_resident_memory_bytes") > 10e6, name
        others = {"gateway", "labeler", "trainer"} - {name}
        assert not any(value(samples, "foodcal_service_info", service=other) for other in others)


async def test_rpcs_are_counted_by_method_and_status_code_with_their_latency(stack):
    before = {name: stack.scrape(name) for name in ("gateway", "labeler")}
    await analyze(stack, photo((10, 120, 30)))
    await analyze(stack, photo((10, 121, 30)))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await analyze(stack, photo((10, 122, 30)), token="not-a-valid-token")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await analyze(stack, b"not an image")
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = {name: stack.scrape(name) for name in ("gateway", "labeler")}

    gw_before, gw_after = before["gateway"], after["gateway"]
    assert handled(gw_before, gw_after, GATEWAY, "AnalyzeMeal", "OK") == 2
    assert handled(gw_before, gw_after, GATEWAY, "AnalyzeMeal", "UNAUTHENTICATED") == 1
    assert handled(gw_before, gw_after, GATEWAY, "AnalyzeMeal", "INVALID_ARGUMENT") == 1
    started = {"grpc_service": GATEWAY, "grpc_method": "AnalyzeMeal", "grpc_type": "unary"}
    assert moved(gw_before, gw_after, "foodcal_grpc_server_started_total", **started) == 4
    assert latency_count(gw_before, gw_after, GATEWAY, "AnalyzeMeal") == 4
    spent = moved(gw_before, gw_after, "foodcal_grpc_server_handling_seconds_sum", **started)
    assert 0 < spent < 120
    # The gateway asked the labeler once per accepted photo (synchronous labelling).
    assert handled(before["labeler"], after["labeler"], LABELER, "LabelMeal", "OK") == 2
    assert handled(gw_before, gw_after, LABELER, "LabelMeal", "OK") == 0  # each process counts its own


async def test_chatgpt_calls_tokens_cost_and_cache_hits_by_model(stack, openai_stub):
    before = stack.scrape("labeler")
    first = photo((200, 10, 90))
    await label_directly(stack, first)
    await label_directly(stack, first)  # the same photo again: from the cache, not paid twice
    await label_directly(stack, photo((200, 11, 90)))
    after = stack.scrape("labeler")

    assert moved(before, after, "foodcal_chatgpt_calls_total", model=MODEL, outcome="answered") == 2
    assert moved(before, after, "foodcal_label_cache_hits_total", model=MODEL) == 1
    # The stub reports 120 prompt and 40 completion tokens per call.
    assert moved(before, after, "foodcal_chatgpt_tokens_total", model=MODEL, kind="prompt") == 240
    assert moved(before, after, "foodcal_chatgpt_tokens_total", model=MODEL, kind="completion") == 80
    cost = moved(before, after, "foodcal_chatgpt_cost_usd_total", model=MODEL)
    assert cost == pytest.approx(2 * estimate_cost(MODEL, 120, 40)) and cost > 0
    assert moved(before, after, "foodcal_chatgpt_call_duration_seconds_count", model=MODEL) == 2
    assert handled(before, after, LABELER, "LabelMeal", "OK") == 3


async def test_label_queue_depth_and_oldest_pending_age_follow_the_database(stack, openai_stub):
    before_labeler = stack.scrape("labeler")
    openai_stub.reset(error(500, "overloaded"))  # one failure: that label stays pending (retry in 600 s)
    response = await analyze(stack, photo((90, 90, 200)))
    openai_stub.reset()
    assert response.label_status == common_pb2.LABEL_STATUS_PENDING
    after_labeler = stack.scrape("labeler")
    calls = moved(
        before_labeler, after_labeler, "foodcal_chatgpt_calls_total", model=MODEL, outcome="unavailable"
    )
    assert calls == 1
    assert handled(before_labeler, after_labeler, LABELER, "LabelMeal", "UNAVAILABLE") == 1

    with stack.db.session() as session:
        pending = session.exec(
            select(Sample).join(LabelJob).where(LabelJob.status == LabelStatus.PENDING)
        ).all()
    oldest = min(sample.created_at for sample in pending)
    await asyncio.sleep(1.0)
    samples = stack.scrape("gateway")
    assert value(samples, "foodcal_label_queue_depth") == len(pending) >= 1
    age = value(samples, "foodcal_label_queue_oldest_pending_age_seconds")
    expected = (utcnow() - metrics._aware(oldest)).total_seconds()
    assert 1.0 <= age <= expected + 1.0


async def test_a_training_run_a_swap_a_rollback_and_the_served_version(stack, torchserve):
    classifier = await current_classifier(torchserve.client)
    add_samples(stack.db, 240, classifier, learnable, seed=7)
    before = stack.scrape("trainer")
    assert value(before, "foodcal_model_served_version") == 0
    assert value(before, "foodcal_training_runs_total", outcome="deployed") == 0  # present before any run
    async with stack.channel("trainer") as channel:
        trainer = trainer_pb2_grpc.TrainerServiceStub(channel)
        meta = auth(INTERNAL_TOKEN)
        started = await trainer.StartTrainingRun(trainer_pb2.StartTrainingRunRequest(), metadata=meta)
        events = [
            response.event
            async for response in trainer.WatchTrainingRun(
                trainer_pb2.WatchTrainingRunRequest(run_id=started.run_id), metadata=meta, timeout=240
            )
        ]
        outcome = events[-1].outcome
        assert outcome.status == common_pb2.TRAINING_RUN_STATUS_DEPLOYED, outcome.message
        during = stack.scrape("trainer")
        await trainer.RollbackModel(trainer_pb2.RollbackModelRequest(version=0), metadata=meta)
    after = stack.scrape("trainer")

    assert moved(before, during, "foodcal_training_runs_total", outcome="deployed") == 1
    assert moved(before, during, "foodcal_training_runs_total", outcome="failed") == 0
    assert moved(before, during, "foodcal_training_run_duration_seconds_count", outcome="deployed") == 1
    assert 0 < moved(before, during, "foodcal_training_run_duration_seconds_sum", outcome="deployed") < 240
    assert moved(before, during, "foodcal_model_swaps_total", kind="deploy", outcome="ok") == 1
    assert value(during, "foodcal_model_served_version") == outcome.result_version == 1
    assert moved(during, after, "foodcal_model_swaps_total", kind="rollback", outcome="ok") == 1
    assert moved(before, after, "foodcal_model_swap_duration_seconds_count", kind="rollback") == 1
    assert value(after, "foodcal_model_served_version") == 0
    assert value(after, "foodcal_training_runs_in_progress") == 0
    assert handled(before, after, TRAINER, "WatchTrainingRun", "OK", kind="server_stream") == 1
    assert handled(before, after, TRAINER, "RollbackModel", "OK") == 1

    # LOG_FORMAT=json: every line is one JSON object; the run's lines carry its id.
    lines = stack.log_lines("trainer")
    run_lines = [line for line in lines if line.get("run_id") == started.run_id]
    assert any(line["message"].startswith(f"run {started.run_id} deployed") for line in run_lines)
    assert any(line["message"] == "nutrition v1 is now served" for line in run_lines)
    assert any(f"run {started.run_id} started" in line["message"] and "request_id" in line for line in lines)
    assert all({"time", "level", "service", "logger", "message"} <= set(line) for line in lines)
    assert {line["service"] for line in lines} == {"trainer"}


def test_json_log_lines_of_a_request_carry_its_request_id(stack):
    lines = stack.log_lines("gateway")
    with_request = [line for line in lines if "request_id" in line]
    assert any(line["message"].startswith("sample ") for line in with_request)
    refused = [line for line in with_request if line["message"].startswith("refused")]
    assert refused and len({line["request_id"] for line in refused}) == len(refused)
    assert all(line["service"] == "gateway" for line in lines)


# -- a real Prometheus over the services, with every dashboard query ------------------------------------


async def test_prometheus_scrapes_every_service_and_every_dashboard_query_returns_data(
    stack, torchserve, tmp_path
):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (`make test` installs Debian's prometheus package)")
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(prometheus_config(stack, torchserve)))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_file = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={config_file}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log_file, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:  # every target scraped and up
            try:
                up = query(base, "up")
                if len(up) == 4 and all(result["value"][1] == "1" for result in up):
                    break
            except OSError:
                pass
            stopped = process.poll() is not None
            assert time.monotonic() < deadline and not stopped, (tmp_path / "prometheus.log").read_text()[
                -2000:
            ]
            await asyncio.sleep(0.5)
        for round_ in range(3):  # traffic across several scrapes, so rates have something to see
            await analyze(stack, photo((30, 60 + round_, 90)))
            await label_directly(stack, photo((30, 60 + round_, 90)))
            await asyncio.sleep(1.5)
        await asyncio.sleep(2.0)
        queries = dashboard_queries()
        assert len(queries) >= 15
        empty = [(title, expr) for title, expr in queries if not query(base, as_instant_query(expr))]
        assert not empty, f"dashboard queries without data: {empty}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log_file.close()
