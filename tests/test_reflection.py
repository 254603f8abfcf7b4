"""Reflection as grpcurl uses it, with the real grpcurl binary against a real server."""

import asyncio
import sys
from pathlib import Path

import pytest

from foodcal.rpc.grpc_server import ServiceSpec, start_server
from foodcal.v1 import gateway_pb2, gateway_pb2_grpc

GRPCURL = Path(sys.executable).parent / "grpcurl"
GATEWAY = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name

pytestmark = pytest.mark.skipif(not GRPCURL.exists(), reason="grpcurl is installed by `make` into .venv")


@pytest.fixture
async def server():
    spec = ServiceSpec(
        name="gateway",
        register=lambda s: gateway_pb2_grpc.add_GatewayServiceServicer_to_server(
            gateway_pb2_grpc.GatewayServiceServicer(), s
        ),
        service_names=[GATEWAY],
        tokens=["a-token"],
        max_message_bytes=1024 * 1024,
    )
    running = await start_server(spec, "127.0.0.1", 0)
    yield running
    await running.stop(0)


async def grpcurl(server, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(GRPCURL), "-plaintext", f"127.0.0.1:{server.port}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    return process.returncode, output.decode()


async def test_grpcurl_describes_a_method(server):
    code, output = await grpcurl(server, "describe", f"{GATEWAY}.AnalyzeMeal")
    assert code == 0, output
    assert f"{GATEWAY}.AnalyzeMeal is a method" in output
    assert (
        "rpc AnalyzeMeal ( .foodcal.v1.AnalyzeMealRequest ) returns ( .foodcal.v1.AnalyzeMealResponse )"
        in output
    )


async def test_grpcurl_describes_a_streaming_method_its_service_and_its_messages(server):
    code, output = await grpcurl(server, "describe", f"{GATEWAY}.WatchTrainingRun")
    streamed = "returns ( stream .foodcal.v1.GatewayServiceWatchTrainingRunResponse )"
    assert code == 0 and streamed in output, output
    code, output = await grpcurl(server, "describe", GATEWAY)
    assert code == 0 and "rpc RollbackModel" in output, output
    code, output = await grpcurl(server, "describe", "foodcal.v1.Nutrition")
    assert code == 0 and "calories_kcal" in output, output
    code, output = await grpcurl(server, "list", GATEWAY)
    assert code == 0 and f"{GATEWAY}.GetStats" in output.split(), output


async def test_grpcurl_still_says_symbol_not_found_for_a_method_that_does_not_exist(server):
    for symbol in (f"{GATEWAY}.NoSuchMethod", "foodcal.v1.NoSuchService.AnalyzeMeal"):
        code, output = await grpcurl(server, "describe", symbol)
        assert code != 0 and "Symbol not found" in output, output


async def test_grpcurl_describes_the_export_stream_and_lists_the_meal_data_rpcs(server):
    code, output = await grpcurl(server, "describe", f"{GATEWAY}.ExportSamples")
    assert code == 0 and "returns ( stream .foodcal.v1.ExportSamplesResponse )" in output, output
    code, output = await grpcurl(server, "list", GATEWAY)
    for rpc in ("GetDailyTotals", "ExportSamples", "DeleteSample"):
        assert code == 0 and f"{GATEWAY}.{rpc}" in output.split(), output
    code, output = await grpcurl(server, "describe", "foodcal.v1.GetDailyTotalsRequest")
    assert code == 0 and "time_zone" in output, output
