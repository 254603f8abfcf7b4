"""`python -m bench.gateway_cpu`: the gateway's own CPU per AnalyzeMeal, on two phone photo sizes.

A real TorchServe (the demo classifier: the model's time is not the gateway's) and the gateway as
its own process (`python -m gateway`: SQLite, local image store, USE_CHATGPT=false), measured
from outside (bench/gateway_process.py): the CPU of every thread of it per request (the event
loop, gRPC, the photo checks, the image store, the database) and its page faults. An in-process
gateway measured less than a real one: the benchmark's own allocations had already raised glibc's
mmap threshold, which a fresh gateway's heap had not (19 vs 15 ms on a 12 MP photo, fixed since).

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
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench.gateway_process import REQUESTS, ROOT, WARMUP, interleaved, start_gateway_process
from bench.harness import (
    RESULTS,
    group_cpu_seconds,
    machine,
    machine_lines,
    progress,
    save,
    say,
    start_torchserve,
    table,
    verdict,
)
from bench.serving import make_photo, unique

SIZES = {"12 MP": (4000, 3000), "1280×960": (1280, 960)}
ORIENTATION_ROTATE_90 = 6
TARGET_MS = 10.0  # the gateway CPU per request
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


# -- the run -------------------------------------------------------------------------------------


def steps(photo: bytes, work: Path) -> dict:
    from foodcal.store import ImageStore
    from model_store.worker.photos import decode_for_model, validate_image

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
        gateway, port = await start_gateway_process(ROOT, work / "gateway", process.config)
        try:
            for name, size in SIZES.items():
                progress(f"{name}: {WARMUP} warm-up requests, then {REQUESTS} timed")
                served, wall = group_cpu_seconds(process.process.pid), time.perf_counter()
                measured = await interleaved(
                    {"gateway": (port, gateway.pid)}, phone_photo(size), str(size[0])
                )
                requests = WARMUP + REQUESTS
                served = group_cpu_seconds(process.process.pid) - served
                cpu = measured["cpu_ms"]["gateway"]
                results[name]["analyze_meal"] = {
                    "requests": REQUESTS,
                    "gateway_cpu_ms_per_request": statistics.fmean(cpu),
                    "gateway_cpu_ms_median": statistics.median(cpu),
                    "gateway_page_faults_median": statistics.median(measured["minor_faults"]["gateway"]),
                    "torchserve_cpu_ms_per_request": served * 1000 / requests,
                    "wall_ms_per_request": (time.perf_counter() - wall) * 1000 / requests,
                }
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)
    finally:
        await client.close()
        process.stop()
    return results


MEASURED = {
    "AnalyzeMeal: gateway CPU (mean)": lambda run: run["analyze_meal"]["gateway_cpu_ms_per_request"],
    "AnalyzeMeal: gateway CPU (median)": lambda run: run["analyze_meal"]["gateway_cpu_ms_median"],
    "AnalyzeMeal: gateway page faults (median)": lambda run: run["analyze_meal"][
        "gateway_page_faults_median"
    ],
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
                try:
                    then = read(baseline[name])
                except KeyError:  # a baseline from before this row was measured
                    rows[-1] += ["—", "—"]
                    continue
                rows[-1] += [f"{then:.1f}", f"{read(run) / then:.2f}×" if then else "—"]
        share = ["AnalyzeMeal: gateway's share of both (means)", f"{gateway / (gateway + served):.0%}"]
        rows.insert(4, share + (["", ""] if compare else []))
        headers = ["measured (per request)", "CPU ms or faults"]
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
    targets = []
    for name in SIZES:
        median = results[name]["analyze_meal"]["gateway_cpu_ms_median"]
        target = f"gateway CPU per AnalyzeMeal ≤ {TARGET_MS:g} ms, {name} photo (median)"
        targets.append([target, f"{median:.1f} ms", verdict(median <= TARGET_MS)])
    lines += ["", table(["target (#15)", "measured", "verdict"], targets)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="an earlier run's gateway_cpu.json to compare with")
    args = parser.parse_args()
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
