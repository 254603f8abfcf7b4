"""What tests/test_supervision.py watches while it kills processes: clients sending photos, the
gateway's health, the served version, and waiting with a bound for each recovery."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from foodcal.v1 import gateway_pb2, gateway_pb2_grpc
from tests.conftest import auth, photo
from tests.supervised_stack import (
    CLIENT_OPTIONS,
    GATEWAY_SERVICE,
    RECOVERY_BOUND_S,
    Outcome,
    Stack,
)


async def until(predicate, what: str, bound_s: float = RECOVERY_BOUND_S, every_s: float = 0.2):
    deadline = time.monotonic() + bound_s
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {bound_s:.0f}s")
        await asyncio.sleep(every_s)


async def health_of(port: int, service: str) -> str:
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    except grpc.aio.AioRpcError as error:
        return error.code().name


async def watch_health(stack: Stack, stop: asyncio.Event) -> None:
    port = stack.ports["gateway"]
    while not stop.is_set():
        service, overall = await health_of(port, GATEWAY_SERVICE), await health_of(port, "")
        stack.health.append((time.monotonic(), service, overall))
        await asyncio.sleep(0.25)


async def client(stack: Stack, index: int, stop: asyncio.Event) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports['gateway']}", options=CLIENT_OPTIONS) as ch:
        gateway = gateway_pb2_grpc.GatewayServiceStub(ch)
        sent = 0
        while not stop.is_set():
            sent += 1
            request = gateway_pb2.AnalyzeMealRequest(image=photo(color=(index, sent % 256, sent // 256)))
            started = time.monotonic()
            try:
                response = await gateway.AnalyzeMeal(request, metadata=auth(), timeout=30)
                outcome = Outcome(started, time.monotonic(), "OK", response.sample_id)
                outcome.nutrition_version = response.model_versions.nutrition
            except grpc.aio.AioRpcError as error:
                outcome = Outcome(started, time.monotonic(), error.code().name)
            stack.outcomes.append(outcome)
            await asyncio.sleep(0.2 if outcome.code == "OK" else 0.3)


async def outage_and_recovery(stack: Stack, killed_at: float, what: str) -> float:
    """Seconds from the kill to the first answer of a request sent after the outage was seen."""

    async def recovered():
        failures = [o for o in stack.outcomes if o.started >= killed_at and o.code != "OK"]
        if not failures:
            return None
        first_failure = min(o.ended for o in failures)
        oks = [o for o in stack.outcomes if o.code == "OK" and o.started > first_failure]
        return min((o.ended for o in oks), default=None)

    recovered_at = await until(recovered, f"requests after {what}")
    seconds = recovered_at - killed_at
    print(f"{what}: requests answered again {seconds:.1f}s after the kill")
    return seconds


async def served_version(stack: Stack) -> str:
    try:
        return await stack.torchserve.served_version()
    except Exception:
        return ""


async def _async(value):
    return value


async def _served(stack: Stack, version: str) -> bool:
    return await served_version(stack) == version


async def _async_health(stack: Stack, service: str, wanted: str) -> bool:
    return await health_of(stack.ports["gateway"], service) == wanted
