"""`python -m bench.gateway_cpu`: the gateway's own CPU per AnalyzeMeal on a 12-megapixel phone photo.

A real TorchServe (the demo classifier: the model's time is not the gateway's) and the gateway
in-process (SQLite, local image store, USE_CHATGPT=false); the client runs in a child process, so
`time.process_time()` of this process over N requests is the gateway's own work (every thread:
the event loop, gRPC, the photo checks, the image store, the database), divided by N.

The photo: 4000×3000 JPEG, ~2 MB, EXIF orientation 6 (stored landscape, shown portrait), a new
sha256 per request, each with a `request_id`, as a phone app sends them. Also timed in-process:
the photo step alone (`validate_image`) and one sha256 of the photo.

`--baseline FILE` (an earlier run's bench/results/gateway_cpu.json, e.g. from before a change)
prints the ratio of this run to it. Never a timed assertion; saved to bench/results/gateway_cpu.*.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench.common import RESULTS, machine, machine_lines, progress, save, say, start_torchserve, table
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
    from foodcal.photos import validate_image
    from foodcal.settings import load_settings
    from model_store.build import build_models
    from model_store.server import wait_until_ready

    photo = phone_photo()
    valid = validate_image(photo)
    results = {
        "photo": {"size": list(SIZE), "bytes": len(photo), "exif_orientation": ORIENTATION_ROTATE_90},
        "model_input": {
            "bytes": len(valid.model_input),
            "size": list(Image.open(io.BytesIO(valid.model_input)).size),
        },
        "step_validate_image_cpu_ms": cpu_ms(lambda: validate_image(photo)),
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
            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.to_thread(run_client, port, REQUESTS, WARMUP)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            await channel.close()
            await server.stop(0)
            db.dispose()
    finally:
        await client.close()
        process.stop()
    results["analyze_meal"] = {"requests": REQUESTS, "gateway_cpu_ms_per_request": cpu * 1000 / REQUESTS,
                               "wall_ms_per_request": wall * 1000 / REQUESTS}  # fmt: skip
    return results


def report(results: dict, info: dict, baseline: dict | None) -> str:
    photo, analyze = results["photo"], results["analyze_meal"]
    rows = [
        ["AnalyzeMeal: gateway CPU per request", f"{analyze['gateway_cpu_ms_per_request']:.1f}"],
        ["step: validate_image (in-process)", f"{results['step_validate_image_cpu_ms']:.1f}"],
        ["step: one sha256 of the photo", f"{results['step_sha256_cpu_ms']:.1f}"],
    ]
    headers = ["measured (time.process_time)", "ms"]
    if baseline is not None:
        headers += ["baseline ms", "this / baseline"]
        keys = ["analyze_meal", "step_validate_image_cpu_ms", "step_sha256_cpu_ms"]
        for row, key in zip(rows, keys, strict=True):
            then = baseline[key]["gateway_cpu_ms_per_request"] if key == "analyze_meal" else baseline[key]
            now = float(row[1])
            row += [f"{then:.1f}", f"{now / then:.2f}×"]
    lines = [
        "bench.gateway_cpu — the gateway's own CPU per AnalyzeMeal, one run",
        *machine_lines(info),
        f"photo: {photo['size'][0]}×{photo['size'][1]} JPEG, {photo['bytes'] / 1e6:.2f} MB, EXIF orientation "
        f"{photo['exif_orientation']}; gateway → TorchServe: {results['model_input']['bytes'] / 1e3:.0f} KB; "
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
