"""The `system` fixture: labeler, trainer and gateway in-process around the real TorchServe."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from foodcal.rpc.grpc_server import RunningServer
from foodcal.settings import Settings
from foodcal.store import Database
from model_store.ports import free_port
from tests.conftest import OPENAI_KEY, make_settings, start_service


@dataclass
class System:
    settings: Settings
    db: Database
    servers: dict[str, RunningServer]
    gateway: object  # GatewayServiceStub
    channel: grpc.aio.Channel

    @property
    def upload_files(self) -> list[Path]:
        return [p for p in Path(self.settings.upload_dir).rglob("*") if p.is_file()]

    def sample_count(self) -> int:
        from sqlmodel import func, select

        from foodcal.store import Sample

        with self.db.session() as session:
            return session.exec(select(func.count()).select_from(Sample)).one()


@pytest.fixture
async def system(torchserve, openai_stub, tmp_path, clean_nutrition):
    """`await system(**settings)` starts the services; everything is stopped after the test."""
    import gateway.__main__ as gateway_main
    import labeler.__main__ as labeler_main
    import trainer.__main__ as trainer_main
    from foodcal.v1 import gateway_pb2_grpc

    openai_stub.reset()
    started: list[System] = []

    async def start(services=("labeler", "trainer", "gateway"), db_url: str | None = None, **overrides):
        labeler_port, trainer_port, gateway_port = free_port(), free_port(), free_port()
        values = {
            **torchserve.settings(),
            "use_chatgpt": True,
            "openai_api_key": OPENAI_KEY,
            "openai_base_url": openai_stub.base_url,
            "openai_max_retries": 0,
            "labeler_address": f"127.0.0.1:{labeler_port}",
            "trainer_address": f"127.0.0.1:{trainer_port}",
            "gateway_port": gateway_port,
            "labeler_port": labeler_port,
            "trainer_port": trainer_port,
            "min_training_samples": 50,
        }
        if db_url:
            values["database_url"] = db_url
        settings = make_settings(tmp_path, **{**values, **overrides})
        database = Database(settings.database_url)
        database.migrate()
        modules = {"labeler": labeler_main, "trainer": trainer_main, "gateway": gateway_main}
        ports = {
            "labeler": settings.labeler_port,
            "trainer": settings.trainer_port,
            "gateway": settings.gateway_port,
        }
        servers = {
            name: await start_service(modules[name], settings, database, ports[name]) for name in services
        }
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{settings.gateway_port}")
        handle = System(settings, database, servers, gateway_pb2_grpc.GatewayServiceStub(channel), channel)
        started.append(handle)
        return handle

    yield start
    hung = []
    for handle in started:
        await handle.channel.close()
        for name, server in handle.servers.items():
            try:  # a service that cannot stop names itself, and the others still stop
                await asyncio.wait_for(server.stop(0), STOP_TIMEOUT_S)
            except TimeoutError:
                hung.append(f"{name}: {_pending_tasks()}")
        handle.db.dispose()
    openai_stub.reset()
    assert not hung, f"did not stop within {STOP_TIMEOUT_S:.0f} s: {hung}"


STOP_TIMEOUT_S = 60.0


def _pending_tasks() -> str:
    """Where every other task of the loop waits: what a hung stop is stuck behind."""
    current = asyncio.current_task()
    waiting = []
    for task in asyncio.all_tasks():
        if task is not current:
            frames = task.get_stack()
            waiting.append(
                f"{task.get_name()} at {frames[-1].f_code.co_qualname}" if frames else task.get_name()
            )
    return "; ".join(waiting)


@pytest.fixture(scope="module")
async def stack(torchserve, openai_stub, tmp_path_factory):
    """Gateway, labeler and trainer as real processes with their metrics endpoints, per test module
    (tests/metrics_helpers.py `running_stack`)."""
    from tests.metrics_helpers import running_stack

    async with running_stack(torchserve, openai_stub, tmp_path_factory) as handle:
        yield handle
