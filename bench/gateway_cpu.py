"""`python -m bench.gateway_cpu`: the gateway's own CPU per AnalyzeMeal, on two phone photo sizes.

A real TorchServe (the demo classifier: the model's time is not the gateway's) and the gateway
in-process (SQLite, local image store, USE_CHATGPT=false); the client runs in a child process, so
`time.process_time()` of this process over N requests is the gateway's own work (every thread:
the event loop, gRPC, the photo checks, the image store, the database), divided by N.

The photos: 4000×3000 (12 MP, ~2 MB) and 1280×960 JPEGs, EXIF orientation 6 (stored landscape,
shown portrait), a new sha256 per request, each with a `request_id`, as a phone app sends them.
TorchServe's own CPU per request (java and workers) is reported beside the gateway's, and the
gateway's share of both is the ratio within the run: the decode moved to the worker, so the sum is
what a request costs the machine. The demo classifier's worker decodes for its own 64 px input;
the in-process worker step is timed for a 224 px ViT (nateraw/food). Also timed in process: the
gateway's steps (`validate_image`, headers only; one sha256; ImageStore.put, the kernel's copy of
the photo into the page cache, which grows with its bytes) and the worker's (`decode_for_model`).
`--baseline FILE` (an earlier run's bench/results/gateway_cpu.json) prints the ratio of this run
to it. Never a timed assertion; saved to bench/results/gateway_cpu.*.
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

SIZES = {"12 MP": (4000, 3000), "1280×960": (1280, 960)}
REQUESTS, WARMUP = 60, 3
ORIENTATION_ROTATE_90 = 6
VIT_INPUT_PX = 224  # the worker step as nateraw/food's worker runs it (the demo decodes for 64 px)


def phone_photo(size: tuple[int, int]) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = ORIENTATION_ROTATE_90
    return make_photo(size, seed=7, exif=exif.tobytes())


def cpu_ms(call, repeat: int = 10) -> float:
    call()
    start = time.process_time()
    for _ in range(repeat):
        call()
    return (time.process_time() - start) * 1000 / repeat


# -- the client, in its own process --------------------------------------------------------------


async def send(port: int, count: int, first: int, width: int, height: int) -> None:
    import grpc

    from foodcal.grpc_server import message_size_options
    from foodcal.v1 import gateway_pb2, gateway_pb2_grpc

    photo = phone_photo((width, height))
    options = message_size_options(32 * 1024 * 1024)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        for index in range(first, first + count):
            request = gateway_pb2.AnalyzeMealRequest(
                image=unique(photo, index), filename="meal.jpg", request_id=f"bench-{width}-{index}"
            )
            await gateway.AnalyzeMeal(
                request, metadata=(("authorization", f"Bearer {API_TOKEN}"),), timeout=120
            )


def run_client(port: int, count: int, first: int, size: tuple[int, int]) -> None:
    arguments = [str(value) for value in (port, count, first, *size)]
    subprocess.run([sys.executable, "-m", "bench.gateway_cpu", "--client", *arguments], check=True)


# -- the run -------------------------------------------------------------------------------------


def steps(photo: bytes, work: Path) -> dict:
    from foodcal.photos import decode_for_model, validate_image
    from foodcal.store import ImageStore

    images, counter = ImageStore(work), iter(range(10**6))
    return {
        "photo": {"bytes": len(photo), "decoded_size": list(decode_for_model(photo, VIT_INPUT_PX).size)},
        "step_validate_image_cpu_ms": cpu_ms(lambda: validate_image(photo)),
        "step_decode_for_model_cpu_ms": cpu_ms(lambda: decode_for_model(photo, VIT_INPUT_PX)),
        "step_sha256_cpu_ms": cpu_ms(lambda: hashlib.sha256(photo).hexdigest()),
        "step_image_store_put_cpu_ms": cpu_ms(lambda: images.put(unique(photo, next(counter)))),
    }


async def run(work: Path) -> dict:
    from foodcal.settings import load_settings
    from model_store.build import build_models
    from model_store.server import wait_until_ready

    results = {
        name: steps(phone_photo(size), work / f"put-{index}")
        for index, (name, size) in enumerate(SIZES.items())
    }
    progress("building the demo classifier's food101.mar and nutrition-v0.mar; starting TorchServe")
    store = work / "mar"
    build_models(load_settings(_env_file=None, food101_model="demo", model_store_dir=store))
    process, client = start_torchserve(store, work / "torchserve")
    try:
        await wait_until_ready(client, process, timeout_s=300)
        _, db, server, channel, _ = await start_gateway(work, store, process.config)
        port, pgid = server.port, process.process.pid
        try:
            for name, size in SIZES.items():
                progress(f"{name}: {WARMUP} warm-up requests, then {REQUESTS} timed, from a child process")
                await asyncio.to_thread(run_client, port, WARMUP, 0, size)
                cpu, served, wall = time.process_time(), group_cpu_seconds(pgid), time.perf_counter()
                await asyncio.to_thread(run_client, port, REQUESTS, WARMUP, size)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                served = group_cpu_seconds(pgid) - served
                results[name]["analyze_meal"] = {
                    "requests": REQUESTS,
                    "gateway_cpu_ms_per_request": cpu * 1000 / REQUESTS,
                    "torchserve_cpu_ms_per_request": served * 1000 / REQUESTS,
                    "wall_ms_per_request": wall * 1000 / REQUESTS,
                }
        finally:
            await channel.close()
            await server.stop(0)
            db.dispose()
    finally:
        await client.close()
        process.stop()
    return results


MEASURED = {
    "AnalyzeMeal: gateway CPU": lambda run: run["analyze_meal"]["gateway_cpu_ms_per_request"],
    "AnalyzeMeal: TorchServe CPU (demo model)": lambda run: run["analyze_meal"][
        "torchserve_cpu_ms_per_request"
    ],
    "gateway step: validate_image (headers only)": lambda run: run["step_validate_image_cpu_ms"],
    "gateway step: one sha256 of the photo": lambda run: run["step_sha256_cpu_ms"],
    "gateway step: ImageStore.put (write + fsync)": lambda run: run["step_image_store_put_cpu_ms"],
    "worker step: decode_for_model for a 224 px ViT": lambda run: run["step_decode_for_model_cpu_ms"],
}


def report(results: dict, info: dict, baseline: dict | None) -> str:
    lines = ["bench.gateway_cpu — the gateway's own CPU per AnalyzeMeal, one run", *machine_lines(info)]
    for name, size in SIZES.items():
        run = results[name]
        analyze = run["analyze_meal"]
        gateway, served = analyze["gateway_cpu_ms_per_request"], analyze["torchserve_cpu_ms_per_request"]
        compare = baseline is not None and name in baseline
        rows = []
        for label, read in MEASURED.items():
            rows.append([label, f"{read(run):.1f}"])
            if compare:
                then = read(baseline[name])
                rows[-1] += [f"{then:.1f}", f"{read(run) / then:.2f}×" if then else "—"]
        share = ["AnalyzeMeal: gateway's share of both", f"{gateway / (gateway + served):.0%}"]
        rows.insert(2, share + (["", ""] if compare else []))
        headers = ["measured (CPU time, per request)", "ms"]
        if compare:
            headers += ["baseline ms", "this / baseline"]
        photo = run["photo"]
        lines += [
            "",
            f"{name} photo: {size[0]}×{size[1]} JPEG, {photo['bytes'] / 1e6:.2f} MB, EXIF orientation "
            f"{ORIENTATION_ROTATE_90}, sent to TorchServe as is (a 224 px ViT's worker decodes it to "
            f"{photo['decoded_size'][0]}×{photo['decoded_size'][1]}); {analyze['requests']} requests, "
            f"wall {analyze['wall_ms_per_request']:.0f} ms each (demo model)",
            "",
            table(headers, rows),
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--client", nargs=5, type=int, metavar=("PORT", "COUNT", "FIRST", "W", "H"), help=argparse.SUPPRESS
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
