"""Load with a hot-swap in the middle: `make soak` (2 minutes) or a quick run inside `make test`.

8 clients send photos to the gateway continuously; meanwhile a training run completes and
hot-swaps the nutrition model. Everything runs as real processes (TorchServe, gateway, labeler,
trainer) so that RSS and file descriptors are measured per process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil

from foodcal.store import Database
from foodcal.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from model_store.build import build_models
from model_store.server import wait_until_ready
from model_store.torchserve_client import TorchServeClient
from tests.conftest import (
    ADMIN_TOKEN,
    API_TOKEN,
    INTERNAL_TOKEN,
    OPENAI_KEY,
    free_port,
    photo,
    start_torchserve,
)
from tests.openai_stub import OpenAIStub
from tests.processes import ServiceProcess, env_for
from tests.trainer_helpers import add_samples, learnable
from trainer.backfill import current_classifier

AUTH = (("authorization", f"Bearer {API_TOKEN}"),)
ADMIN_AUTH = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


@dataclass
class SoakReport:
    duration_s: float
    clients: int
    sent: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    run_status: str = ""
    classifier: str = ""  # the served classifier's identity: its runtime and precision as `auto` chose
    swap_started_s: float = 0.0
    swap_done_s: float = 0.0
    inconsistent: int = 0
    versions_seen: dict[str, int] = field(default_factory=dict)
    rss_mb: dict[str, tuple[float, float]] = field(default_factory=dict)
    fds: dict[str, tuple[int, int]] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            f"requests sent: {self.sent}   failed: {self.failed}   clients: {self.clients}",
            f"classifier served: {self.classifier}",
            f"training run: {self.run_status}; hot-swap between t={self.swap_started_s:.1f}s and "
            f"t={self.swap_done_s:.1f}s; versions answered: {self.versions_seen}; "
            f"inconsistent with the swap moment: {self.inconsistent}",
            "process        RSS start MB  RSS end MB   fds start  fds end",
        ]
        for name, (start, end) in self.rss_mb.items():
            fd_start, fd_end = self.fds.get(name, (0, 0))
            lines.append(f"{name:<14} {start:>12.1f} {end:>11.1f} {fd_start:>11d} {fd_end:>8d}")
        return "\n".join(lines)


def _measure(processes: dict[str, psutil.Process]) -> tuple[dict[str, float], dict[str, int]]:
    rss, fds = {}, {}
    for name, process in processes.items():
        family = [process, *process.children(recursive=True)]
        rss[name] = sum(p.memory_info().rss for p in family if p.is_running()) / 2**20
        fds[name] = process.num_fds()
    return rss, fds


async def soak(duration_s: float, clients: int = 8, workdir: Path | None = None) -> SoakReport:
    workdir = Path(workdir or tempfile.mkdtemp(prefix="foodcal-soak-"))
    from foodcal.settings import load_settings

    store = workdir / "model_store" / "mar"
    build_models(load_settings(_env_file=None, food101_model="demo", model_store_dir=store))
    torchserve = start_torchserve(store, workdir / "torchserve")
    config = torchserve.config
    inference, management = (
        config.inference_address,
        config.management_address,
    )
    ts_client = TorchServeClient([inference], [management])
    stub = OpenAIStub(OPENAI_KEY).start()
    ports = {"gateway": free_port(), "labeler": free_port(), "trainer": free_port()}
    settings = {
        "api_tokens": [API_TOKEN],
        "admin_tokens": [ADMIN_TOKEN],
        "client_rate_per_minute": 0,  # a soak sends far more than a person would
        "internal_token": INTERNAL_TOKEN,
        "database_url": f"sqlite:///{workdir}/foodcal.db",
        "upload_dir": workdir / "uploads",
        "models_dir": workdir / "models",
        "model_store_dir": store,
        "torchserve_endpoints": [inference],
        "torchserve_management": [management],
        "use_chatgpt": True,
        "use_own_model_instead_chatgpt": True,
        "openai_api_key": OPENAI_KEY,
        "openai_base_url": stub.base_url,
        "gateway_port": ports["gateway"],
        "labeler_port": ports["labeler"],
        "trainer_port": ports["trainer"],
        "labeler_address": f"127.0.0.1:{ports['labeler']}",
        "trainer_address": f"127.0.0.1:{ports['trainer']}",
        "log_level": "WARNING",
    }
    env = env_for(settings)
    services: dict[str, ServiceProcess] = {}
    report = SoakReport(duration_s, clients)
    try:
        await wait_until_ready(ts_client, torchserve, timeout_s=180)
        db = Database(settings["database_url"])
        db.migrate()
        report.classifier = await current_classifier(ts_client)
        add_samples(db, 200, report.classifier, learnable)
        db.dispose()
        for name in ("labeler", "trainer", "gateway"):
            services[name] = ServiceProcess(name, ports[name], env, workdir / f"{name}.log").start()
        processes = {name: psutil.Process(s.process.pid) for name, s in services.items()}
        processes["torchserve"] = psutil.Process(torchserve.process.pid)
        await _drive(report, ports["gateway"], processes, clients)
    finally:
        for service in services.values():
            service.stop()
        await ts_client.close()
        torchserve.stop()
        stub.stop()
    return report


async def _drive(report: SoakReport, port: int, processes, clients: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        for index in range(clients):  # warm-up: every path has run once before measuring
            await gateway.AnalyzeMeal(
                gateway_pb2.AnalyzeMealRequest(image=photo(color=(index, 0, 0))), metadata=AUTH
            )
        rss_start, fds_start = _measure(processes)
        answers: list[tuple[float, float, int]] = []
        start, stop = time.monotonic(), asyncio.Event()

        async def client(index: int) -> None:
            counter = 0
            while not stop.is_set():
                counter += 1
                image = photo(color=(index * 30 % 256, counter % 256, (counter // 256) % 256))
                sent = time.monotonic() - start
                report.sent += 1
                try:
                    response = await gateway.AnalyzeMeal(
                        gateway_pb2.AnalyzeMealRequest(image=image), metadata=AUTH, timeout=60
                    )
                    answers.append((sent, time.monotonic() - start, response.model_versions.nutrition))
                except grpc.aio.AioRpcError as error:
                    report.failed += 1
                    report.failures.append(f"{error.code().name}: {error.details()}")

        async def train() -> None:
            await asyncio.sleep(report.duration_s / 3)
            report.swap_started_s = time.monotonic() - start
            started = await gateway.StartTrainingRun(
                gateway_pb2.GatewayServiceStartTrainingRunRequest(), metadata=ADMIN_AUTH
            )
            async for event in gateway.WatchTrainingRun(
                gateway_pb2.GatewayServiceWatchTrainingRunRequest(run_id=started.run_id), metadata=ADMIN_AUTH
            ):
                if event.event.HasField("outcome"):
                    report.run_status = common_pb2.TrainingRunStatus.Name(event.event.outcome.status)
            report.swap_done_s = time.monotonic() - start

        trainer_task = asyncio.create_task(train())
        workers = [asyncio.create_task(client(i)) for i in range(clients)]
        await asyncio.sleep(report.duration_s)
        await trainer_task  # a slow machine may need longer than the window for the run to finish
        stop.set()
        await asyncio.gather(*workers)
        rss_end, fds_end = _measure(processes)
    for sent, answered, version in answers:
        report.versions_seen[str(version)] = report.versions_seen.get(str(version), 0) + 1
        if answered < report.swap_started_s and version != 0:
            report.inconsistent += 1
        if sent > report.swap_done_s and version != 1:
            report.inconsistent += 1
    report.rss_mb = {name: (rss_start[name], rss_end[name]) for name in processes}
    report.fds = {name: (fds_start[name], fds_end[name]) for name in processes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    report = asyncio.run(soak(args.duration, args.clients))
    print(report.summary())
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/soak.json").write_text(json.dumps(report.__dict__, indent=2))
    if report.failed or report.inconsistent or report.run_status != "TRAINING_RUN_STATUS_DEPLOYED":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
