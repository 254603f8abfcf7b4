"""Prometheus metrics, scraped from the real `/metrics` endpoints after real calls.

The services run as real processes (`python -m gateway`, …) around the real TorchServe, with the
OpenAI stub and LOG_FORMAT=json; each test reads every counter before and after its calls and
asserts the exact difference. The last test runs a real Prometheus (Debian's `prometheus` package;
skipped when the binary is absent, installed by `make test`) against the services and TorchServe with
the compose scrape config, and evaluates every query of the Grafana dashboard.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc
import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select

from foodcal import logs, metrics
from foodcal.settings import load_settings
from foodcal.store import Database, LabelStatus, Sample
from foodcal.store.tables import utcnow
from foodcal.v1 import (
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    labeler_pb2,
    labeler_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)
from labeler.chatgpt import estimate_cost
from model_store.ports import free_port
from tests.conftest import API_TOKEN, INTERNAL_TOKEN, OPENAI_KEY, auth, photo
from tests.openai_stub import error
from tests.processes import ROOT, ServiceProcess, env_for
from tests.test_trainer import add_samples, learnable
from trainer.backfill import current_classifier

pytestmark = pytest.mark.torchserve

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "foodcal.json"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
MONITORING = ROOT / "deploy" / "compose.monitoring.yml"
MODEL = "gpt-4o-mini"
GATEWAY, LABELER, TRAINER = (
    "foodcal.v1.GatewayService",
    "foodcal.v1.LabelerService",
    "foodcal.v1.TrainerService",
)


# -- scraping --------------------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: dict, after: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def handled(before, after, service, method, code, kind="unary") -> float:
    labels = {"grpc_service": service, "grpc_method": method, "grpc_type": kind, "grpc_code": code}
    return moved(before, after, "foodcal_grpc_server_handled_total", **labels)


def latency_count(before, after, service, method, kind="unary") -> float:
    labels = {"grpc_service": service, "grpc_method": method, "grpc_type": kind}
    return moved(before, after, "foodcal_grpc_server_handling_seconds_count", **labels)


# -- the services as processes ---------------------------------------------------------------------


@dataclass
class Stack:
    db: Database
    ports: dict[str, int]
    metrics_ports: dict[str, int]
    logs: dict[str, Path]
    processes: list[ServiceProcess] = field(default_factory=list)

    def scrape(self, service: str) -> dict:
        return scrape(self.metrics_ports[service])

    def channel(self, service: str) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.ports[service]}")

    def log_lines(self, service: str) -> list[dict]:
        return [json.loads(line) for line in self.logs[service].read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
async def stack(torchserve, openai_stub, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    ports = {name: free_port() for name in ("gateway", "labeler", "trainer")}
    metrics_ports = {name: free_port() for name in ports}
    settings = {
        **{key: value for key, value in torchserve.settings().items()},
        "database_url": f"sqlite:///{tmp}/foodcal.db",
        "data_dir": tmp / "data",
        "upload_dir": tmp / "uploads",
        "models_dir": tmp / "models",
        "api_tokens": API_TOKEN,
        "internal_token": INTERNAL_TOKEN,
        "use_chatgpt": "true",
        "openai_api_key": OPENAI_KEY,
        "openai_base_url": openai_stub.base_url,
        "openai_model": MODEL,
        "openai_max_retries": 0,
        "label_retry_base_s": 600,  # a failed label stays pending for the whole module
        "label_retry_max_s": 600,
        "swap_drain_s": 0.1,
        "log_format": "json",
        "labeler_address": f"127.0.0.1:{ports['labeler']}",
        "trainer_address": f"127.0.0.1:{ports['trainer']}",
        **{f"{name}_port": port for name, port in ports.items()},
        **{f"{name}_metrics_port": port for name, port in metrics_ports.items()},
    }
    db = Database(settings["database_url"])
    db.migrate()
    handle = Stack(db, ports, metrics_ports, {name: tmp / f"{name}.log" for name in ports})
    openai_stub.reset()
    try:
        for name in ("labeler", "trainer", "gateway"):
            process = ServiceProcess(name, ports[name], env_for(settings), handle.logs[name])
            handle.processes.append(process.start())
        yield handle
    finally:
        for process in reversed(handle.processes):
            process.stop()
        db.dispose()
        openai_stub.reset()
        client = torchserve.client  # leave TorchServe serving only nutrition v0
        await client.set_default(client.replicas[0], "nutrition", "0")
        for version in await client.registered_versions():
            if version != "0":
                await client.unregister(client.replicas[0], "nutrition", version)
        for mar in torchserve.config.model_store.glob("nutrition-v*.mar"):
            if mar.name != "nutrition-v0.mar":
                mar.unlink()


async def analyze(stack: Stack, image: bytes, token: str = API_TOKEN) -> gateway_pb2.AnalyzeMealResponse:
    async with stack.channel("gateway") as channel:
        return await gateway_pb2_grpc.GatewayServiceStub(channel).AnalyzeMeal(
            gateway_pb2.AnalyzeMealRequest(image=image, filename="meal.jpg"), metadata=auth(token), timeout=60
        )


async def label_directly(stack: Stack, image: bytes) -> labeler_pb2.LabelMealResponse:
    async with stack.channel("labeler") as channel:
        request = labeler_pb2.LabelMealRequest(image=image)
        request.dish_hints.add(label="pizza", probability=0.9)
        return await labeler_pb2_grpc.LabelerServiceStub(channel).LabelMeal(
            request, metadata=auth(INTERNAL_TOKEN), timeout=60
        )


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
        pending = session.exec(select(Sample).where(Sample.label_status == LabelStatus.PENDING)).all()
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


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", ())
        if "expr" in target
    ]


def as_instant_query(expr: str) -> str:
    """What Grafana sends for a panel, with its interval variables filled in."""
    for variable, window in (("$__rate_interval", "30s"), ("$__range", "5m"), ("$__interval", "5s")):
        expr = expr.replace(variable, window)
    return expr


def prometheus_config(stack: Stack, torchserve) -> dict:
    """The compose scrape config, each job pointed at the same service on this machine."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    local = {
        "foodcal-gateway": f"127.0.0.1:{stack.metrics_ports['gateway']}",
        "foodcal-labeler": f"127.0.0.1:{stack.metrics_ports['labeler']}",
        "foodcal-trainer": f"127.0.0.1:{stack.metrics_ports['trainer']}",
        "torchserve": f"127.0.0.1:{torchserve.config.metrics_port}",
    }
    assert {job["job_name"] for job in config["scrape_configs"]} == set(local)
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [local[job["job_name"]]]}]
        job.pop("scrape_interval", None)
    return config


def query(base: str, expr: str) -> list:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_the_compose_scrape_config_targets_each_service_on_its_metrics_port():
    defaults = load_settings(_env_file=None)
    expected = {
        "foodcal-gateway": f"gateway:{defaults.gateway_metrics_port}",
        "foodcal-labeler": f"labeler:{defaults.labeler_metrics_port}",
        "foodcal-trainer": f"trainer:{defaults.trainer_metrics_port}",
        "torchserve": f"torchserve:{defaults.torchserve_metrics_port}",
    }
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    targets = {
        job["job_name"]: [target for static in job["static_configs"] for target in static["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {job: [target] for job, target in expected.items()}
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {target.split(":")[0] for target in expected.values()} <= set(services)


def test_the_monitoring_overlay_is_valid_compose_and_mounts_files_that_exist():
    overlay = yaml.safe_load(MONITORING.read_text())
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(overlay), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    for service in overlay["services"].values():
        for ports in service.get("ports", ()):
            assert ports.startswith("127.0.0.1:"), ports  # the UIs on the host's loopback only
        for volume in service.get("volumes", ()):
            source = volume.split(":")[0]
            if source.startswith("./"):  # relative to the first compose file: the repository root
                assert (ROOT / source).exists(), source
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(
        panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"] if "targets" in panel
    )


def test_the_compose_scrape_config_is_valid_for_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (`make test` installs Debian's prometheus package)")
    result = subprocess.run([promtool, "check", "config", str(SCRAPE_CONFIG)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


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


# -- in-process pieces ------------------------------------------------------------------------------


def test_json_formatter_writes_one_object_per_line_with_the_bound_ids():
    formatter = logs.JsonFormatter("gateway")
    logger = logging.getLogger("foodcal.test")

    def record(message: str, *args, exc_info=None) -> dict:
        line = formatter.format(
            logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, args, exc_info)
        )
        assert "\n" not in line
        return json.loads(line)

    token = logs.REQUEST_ID.set("req-1")
    try:
        entry = record("sample %s: %s", "abc", "multi\nline")
        assert entry["message"] == "sample abc: multi\nline" and entry["request_id"] == "req-1"
        assert entry["service"] == "gateway" and entry["level"] == "INFO" and "run_id" not in entry
    finally:
        logs.REQUEST_ID.reset(token)
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        entry = record("failed", exc_info=sys.exc_info())
    assert "ValueError: boom" in entry["exception"] and "request_id" not in entry


def test_label_queue_gauges_count_only_pending_samples(sqlite_db):
    now = utcnow()
    with sqlite_db.session() as session:
        for index, (status, age) in enumerate(
            [(LabelStatus.PENDING, 30), (LabelStatus.PENDING, 5), (LabelStatus.LABELED, 300)]
        ):
            session.add(
                Sample(
                    image_sha256=f"{index:064x}",
                    image_path="unused",
                    label_status=status,
                    created_at=now - timedelta(seconds=age),
                )
            )
    gauges = {
        family.name: family.samples[0].value for family in metrics.LabelQueueCollector(sqlite_db).collect()
    }
    assert gauges["foodcal_label_queue_depth"] == 2
    assert 30 <= gauges["foodcal_label_queue_oldest_pending_age_seconds"] < 40
