"""What the metrics tests share: reading `/metrics`, and the three services as real processes.

`running_stack` starts gateway, labeler and trainer around the session's TorchServe and the
OpenAI stub, with LOG_FORMAT=json; tests/test_metrics.py holds it in its module-scoped `stack`.
"""

from __future__ import annotations

import contextlib
import json
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml
from prometheus_client.parser import text_string_to_metric_families

from foodcal.store import Database
from foodcal.v1 import (
    gateway_pb2,
    gateway_pb2_grpc,
    labeler_pb2,
    labeler_pb2_grpc,
)
from model_store.ports import free_port
from tests.conftest import API_TOKEN, INTERNAL_TOKEN, OPENAI_KEY, auth
from tests.processes import ROOT, ServiceProcess, env_for

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


@contextlib.asynccontextmanager
async def running_stack(torchserve, openai_stub, tmp_path_factory) -> AsyncIterator[Stack]:
    """The three services for a test module (its `stack` fixture), stopped and TorchServe reset after."""
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
