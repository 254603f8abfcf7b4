"""`python -m bench.gateway_cpu`: the gateway's own CPU per AnalyzeMeal on a 12-megapixel phone photo.

A real TorchServe (the demo classifier: the model's time is not the gateway's) and the gateway
in-process (SQLite, local image store, USE_CHATGPT=false); the client runs in a child process, so
`time.process_time()` of this process over N requests is the gateway's own work (every thread:
the event loop, gRPC, the photo checks, the image store, the database), divided by N.

The photo: 4000×3000 JPEG, ~2 MB, EXIF orientation 6 (stored landscape, shown portrait), a new
sha256 per request, each with a `request_id`, as a phone app sends them. Also timed in-process:
the gateway's photo step (`validate_image`, headers only), the worker's (`decode_for_model`, one
decode at reduced scale) and one sha256 of the photo. TorchServe's own CPU per request (java and
workers, the demo classifier) is reported beside the gateway's: the decode moved there, so the sum
is what a request costs the machine.

`--baseline FILE` (an earlier run's bench/results/gateway_cpu.json, e.g. from before a change)
prints the ratio of this run to it. Never a timed assertion; saved to bench/results/gateway_cpu.*.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench.common import (
    RESULTS,
    group_cpu_seconds,
    machine,
    machine_lines,
    progress,
    save,
    say,
    start_torchserve,
    table,
)
from bench.serving import API_TOKEN, make_photo, start_gateway, unique

SIZE = (4000, 3000)
REQUESTS, WARMUP = 30, 3
ORIENTATION_ROTATE_90 = 6


def phone_photo() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = ORIENTATION_ROTATE_90
    return make_photo(SIZE, seed=7, exif=exif.tobytes())


def cpu_ms(call, repeat: int = 10) -> float:
    call()
    start = time.process_time()
    for _ in range(repeat):
        call()
    return (time.process_time() - start) * 1000 / repeat


# -- the client, in its own process --------------------------------------------------------------


async def send(port: int, count: int, first: int) -> None:
    import grpc

    from foodcal.grpc_server import message_size_options
    from foodcal.v1 import gateway_pb2, gateway_pb2_grpc

    photo = phone_photo()
    options = message_size_options(32 * 1024 * 1024)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        for index in range(first, first + count):
            request = gateway_pb2.AnalyzeMealRequest(
                image=unique(photo, index), filename="meal.jpg", request_id=f"bench-{index}"
            )
            await gateway.AnalyzeMeal(
                request, metadata=(("authorization", f"Bearer {API_TOKEN}"),), timeout=120
            )


def run_client(port: int, count: int, first: int) -> None:
    command = [sys.executable, "-m", "bench.gateway_cpu", "--client", str(port), str(count), str(first)]
    subprocess.run(command, check=True)


# -- the run -------------------------------------------------------------------------------------


async def run(work: Path) -> dict:
    from foodcal.photos import decode_for_model, validate_image
    from foodcal.settings import load_settings
    from model_store.build import build_models
    from model_store.server import wait_until_ready

    photo = phone_photo()
    results = {
        "photo": {"size": list(SIZE), "bytes": len(photo), "exif_orientation": ORIENTATION_ROTATE_90},
        "model_input": {"bytes": len(photo), "size": list(decode_for_model(photo).size)},
        "step_validate_image_cpu_ms": cpu_ms(lambda: validate_image(photo)),
        "step_decode_for_model_cpu_ms": cpu_ms(lambda: decode_for_model(photo)),
        "step_sha256_cpu_ms": cpu_ms(lambda: hashlib.sha256(photo).hexdigest()),
    }
    progress("building the demo classifier's food101.mar and nutrition-v0.mar; starting TorchServe")
    store = work / "mar"
    build_models(load_settings(_env_file=None, food101_model="demo", model_store_dir=store))
    process, client = start_torchserve(store, work / "torchserve")
    try:
        await wait_until_ready(client, process, timeout_s=300)
        _, db, server, channel, _ = await start_gateway(work, store, process.config)
        port = server.port
        try:
            progress(f"{WARMUP} warm-up requests, then {REQUESTS} timed, from a child process")
            await asyncio.to_thread(run_client, port, WARMUP, 0)
            pgid = process.process.pid
            cpu, served, wall = time.process_time(), group_cpu_seconds(pgid), time.perf_counter()
            await asyncio.to_thread(run_client, port, REQUESTS, WARMUP)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            served = group_cpu_seconds(pgid) - served
        finally:
            await channel.close()
            await server.stop(0)
            db.dispose()
    finally:
        await client.close()
        process.stop()
    results["analyze_meal"] = {"requests": REQUESTS, "gateway_cpu_ms_per_request": cpu * 1000 / REQUESTS,
                               "torchserve_cpu_ms_per_request": served * 1000 / REQUESTS,
                               "wall_ms_per_request": wall * 1000 / REQUESTS}  # fmt: skip
    return results


def report(results: dict, info: dict, baseline: dict | None) -> str:
    photo, analyze = results["photo"], results["analyze_meal"]

    def total(run: dict) -> float | None:
        served = run["analyze_meal"].get("torchserve_cpu_ms_per_request")
        return None if served is None else run["analyze_meal"]["gateway_cpu_ms_per_request"] + served

    measured = {
        "AnalyzeMeal: gateway CPU per request": lambda run: run["analyze_meal"]["gateway_cpu_ms_per_request"],
        "AnalyzeMeal: TorchServe CPU per request (demo model)": lambda run: run["analyze_meal"].get(
            "torchserve_cpu_ms_per_request"
        ),
        "AnalyzeMeal: both, per request": total,
        "gateway step: validate_image (headers only)": lambda run: run["step_validate_image_cpu_ms"],
        "worker step: decode_for_model (reduced scale)": lambda run: run.get("step_decode_for_model_cpu_ms"),
        "gateway step: one sha256 of the photo": lambda run: run["step_sha256_cpu_ms"],
    }

    def ms(value: float | None) -> str:
        return "—" if value is None else f"{value:.1f}"

    rows = [[name, ms(read(results))] for name, read in measured.items()]
    headers = ["measured (CPU time)", "ms"]
    if baseline is not None:
        headers += ["baseline ms", "this / baseline"]
        for row, read in zip(rows, measured.values(), strict=True):
            now, then = read(results), read(baseline)
            row += [ms(then), "—" if now is None or not then else f"{now / then:.2f}×"]
    lines = [
        "bench.gateway_cpu — the gateway's own CPU per AnalyzeMeal, one run",
        *machine_lines(info),
        f"photo: {photo['size'][0]}×{photo['size'][1]} JPEG, {photo['bytes'] / 1e6:.2f} MB, EXIF orientation "
        f"{photo['exif_orientation']}; gateway → TorchServe: {results['model_input']['bytes'] / 1e3:.0f} KB, "
        f"decoded there to {results['model_input']['size'][0]}×{results['model_input']['size'][1]}; "
        f"{analyze['requests']} requests, wall {analyze['wall_ms_per_request']:.0f} ms each (demo model)",
        "",
        table(headers, rows),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--client", nargs=3, type=int, metavar=("PORT", "COUNT", "FIRST"), help=argparse.SUPPRESS
    )
    parser.add_argument("--baseline", type=Path, help="an earlier run's gateway_cpu.json to compare with")
    args = parser.parse_args()
    if args.client:
        asyncio.run(send(*args.client))
        return
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    info = machine()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-cpu-") as work:
        results = asyncio.run(run(Path(work)))
    text = report(results, info, baseline)
    save("gateway_cpu", {"machine": info, **results}, text)
    say(text)
    say(f"saved {RESULTS / 'gateway_cpu.json'}")


if __name__ == "__main__":
    main()
