"""Gateways as their own processes for the gateway benchmarks: started from a source tree on a
running TorchServe, sent timed AnalyzeMeal requests, measured from outside (`/proc`): the CPU of
every thread and the page faults, as the process serves, with its own heap and threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import STAT_MINFLT, stat_fields
from bench.serving import API_TOKEN, INTERNAL_TOKEN, unique
from model_store.ports import free_port

REQUESTS, WARMUP = 80, 5
ROOT = Path(__file__).resolve().parent.parent  # this tree: what `python -m gateway` runs by default


def cpu_ns(pid: int) -> int:
    """Run time of every thread of `pid` so far, in nanoseconds."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):  # a thread that ended meanwhile
            total += int((task / "schedstat").read_text().split()[0])
    return total


def minor_faults(pid: int) -> int:
    """Minor page faults of `pid` so far (memory the kernel had to map in again)."""
    return int(stat_fields(pid)[STAT_MINFLT])


def gateway_env(tree: Path, work: Path, torchserve_config) -> tuple[dict[str, str], int]:
    port = free_port()
    settings = {
        "API_TOKENS": API_TOKEN,
        "ADMIN_TOKENS": "bench-admin-token",
        "CLIENT_RATE_PER_MINUTE": "0",  # a benchmark sends far more than a person would
        "INTERNAL_TOKEN": INTERNAL_TOKEN,
        "DATABASE_URL": f"sqlite:///{work}/foodcal.db",
        "DATA_DIR": str(work / "data"),
        "UPLOAD_DIR": str(work / "uploads"),
        "MODELS_DIR": str(work / "models"),
        "USE_CHATGPT": "false",
        "OPENAI_API_KEY": "",
        "TORCHSERVE_ENDPOINTS": f"127.0.0.1:{torchserve_config.grpc_inference_port}",
        "TORCHSERVE_MANAGEMENT": f"127.0.0.1:{torchserve_config.grpc_management_port}",
        "LABELER_ADDRESS": f"127.0.0.1:{free_port()}",  # never called with USE_CHATGPT=false
        "TRAINER_ADDRESS": f"127.0.0.1:{free_port()}",
        "GATEWAY_PORT": str(port),
        "GATEWAY_METRICS_PORT": "0",
        "LOG_LEVEL": "WARNING",
    }
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OPENAI_", "USE_", "API_"))}
    return {**env, **settings, "PYTHONPATH": str(tree)}, port


async def wait_serving(port: int, process: subprocess.Popen, log: Path) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + 120
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited: {log.read_text()[-2000:]}")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.3)
    raise TimeoutError("gateway not SERVING after 120 s")


async def start_gateway_process(tree: Path, work: Path, torchserve_config) -> tuple[subprocess.Popen, int]:
    """`python -m gateway` from `tree` (its own SQLite database and image store under `work`),
    once it is SERVING; returns the process and its port."""
    env, port = gateway_env(tree, work, torchserve_config)
    log = work.with_suffix(".log")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway"], cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        await wait_serving(port, process, log)
    except BaseException:
        process.kill()
        raise
    return process, port


async def interleaved(gateways: dict[str, tuple[int, int]], photo: bytes, tag: str) -> dict[str, dict]:
    """WARMUP, then REQUESTS to each gateway in turn (which goes first alternates); per gateway, the
    CPU ms and the minor page faults from each of its requests to its next."""
    import grpc

    from foodcal.rpc.grpc_server import message_size_options
    from foodcal.v1 import gateway_pb2, gateway_pb2_grpc

    metadata = (("authorization", f"Bearer {API_TOKEN}"),)
    options = message_size_options(32 * 1024 * 1024)
    channels = {
        name: grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
        for name, (port, _) in gateways.items()
    }
    stubs = {name: gateway_pb2_grpc.GatewayServiceStub(channel) for name, channel in channels.items()}
    cpu: dict[str, list[float]] = {name: [] for name in gateways}
    faults: dict[str, list[float]] = {name: [] for name in gateways}
    last: dict[str, tuple[int, int]] = {}
    try:
        for index in range(WARMUP + REQUESTS + 1):
            order = list(gateways) if index % 2 == 0 else list(reversed(gateways))
            for name in order:
                pid = gateways[name][1]
                now = cpu_ns(pid), minor_faults(pid)
                if index > WARMUP:
                    cpu[name].append((now[0] - last[name][0]) / 1e6)
                    faults[name].append(now[1] - last[name][1])
                last[name] = now
                if index == WARMUP + REQUESTS:
                    continue  # the last reading closes the last timed request
                request = gateway_pb2.AnalyzeMealRequest(
                    image=unique(photo, index), filename="meal.jpg", request_id=f"{tag}-{index}"
                )
                await stubs[name].AnalyzeMeal(request, metadata=metadata, timeout=120)
    finally:
        for channel in channels.values():
            await channel.close()
    return {"cpu_ms": cpu, "minor_faults": faults}
