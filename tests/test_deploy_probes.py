"""The container probes: `python -m foodcal.ops.healthcheck` against a real gRPC health server;
`python -m model_store.readiness` against nothing and against a real TorchServe."""

from __future__ import annotations

import asyncio
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.conftest import free_port
from tests.deploy_helpers import (
    ROOT,
)

# -- the probes ------------------------------------------------------------------------------------


async def run_probe(*args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode, stderr.decode(), time.monotonic() - started


@pytest.fixture
async def health_server():
    servicer = health.aio.HealthServicer()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


async def test_healthcheck_exits_0_when_serving(health_server):
    servicer, address = health_server
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    code, stderr, _ = await run_probe("-m", "foodcal.ops.healthcheck", address)
    assert code == 0, stderr


async def test_healthcheck_fails_when_not_serving(health_server):
    servicer, address = health_server
    await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    code, stderr, _ = await run_probe("-m", "foodcal.ops.healthcheck", address)
    assert code == 1 and "NOT_SERVING" in stderr


async def test_healthcheck_fails_after_graceful_shutdown_starts(health_server):
    servicer, address = health_server
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await servicer.enter_graceful_shutdown()
    code, stderr, _ = await run_probe("-m", "foodcal.ops.healthcheck", address)
    assert code == 1, stderr


async def test_healthcheck_asks_about_a_named_service(health_server):
    servicer, address = health_server
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await servicer.set("foodcal.v1.GatewayService", health_pb2.HealthCheckResponse.SERVING)
    code, _, _ = await run_probe(
        "-m", "foodcal.ops.healthcheck", address, "--service", "foodcal.v1.GatewayService"
    )
    assert code == 0
    code, stderr, _ = await run_probe("-m", "foodcal.ops.healthcheck", address, "--service", "no.Such")
    assert code == 1 and "NOT_FOUND" in stderr


async def test_healthcheck_fails_when_nothing_listens():
    code, stderr, seconds = await run_probe("-m", "foodcal.ops.healthcheck", f"127.0.0.1:{free_port()}")
    assert code == 1 and "UNAVAILABLE" in stderr
    assert seconds < 10


async def test_healthcheck_gives_up_at_its_deadline_when_the_server_hangs():
    from foodcal.ops import healthcheck

    assert healthcheck.DEFAULT_TIMEOUT_S == 3.0

    async def accept_and_stay_silent(reader, writer):
        await reader.read()  # never answers the HTTP/2 handshake
        writer.close()

    silent = await asyncio.start_server(accept_and_stay_silent, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        code, stderr, seconds = await run_probe("-m", "foodcal.ops.healthcheck", f"127.0.0.1:{port}")
    finally:
        silent.close()
    assert code == 1 and "DEADLINE_EXCEEDED" in stderr
    assert 2.5 < seconds < 15


async def test_readiness_fails_when_torchserve_is_not_there():
    address = f"127.0.0.1:{free_port()}"
    code, stderr, _ = await run_probe("-m", "model_store.readiness", address, "--timeout", "5")
    assert code == 1 and "not ready" in stderr


@pytest.mark.torchserve
async def test_readiness_passes_only_when_torchserve_answers_a_prediction(torchserve):
    code, stderr, _ = await run_probe("-m", "model_store.readiness", torchserve.inference)
    assert code == 0, stderr
    # The HTTP ping port answers too, but it is not a gRPC inference endpoint: not ready.
    rest = f"127.0.0.1:{torchserve.config.http_port}"
    code, stderr, _ = await run_probe("-m", "model_store.readiness", rest, "--timeout", "5")
    assert code == 1, stderr
