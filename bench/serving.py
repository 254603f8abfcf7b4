"""`python -m bench.serving`: what serving a photo costs on top of the model itself, and batching.

In one run on this machine, with a ViT-B/16-sized Food-101 classifier (random weights, built
locally: nateraw/food is a ViT-B/16) and the nutrition head (v0, the reference table):

1. the floor: the same photo decoded, preprocessed and run through the same model in-process, by
   the very handler code TorchServe runs (Food101Handler + NutritionHandler, mock context);
2. TorchServe direct: model_store.torchserve_client.TorchServeClient.classify + predict_nutrition (gRPC);
3. AnalyzeMeal end to end through the in-process gateway (USE_CHATGPT=false, SQLite, image store);
4. throughput with 1, 4 and 8 concurrent clients (TorchServe direct), batching off and on.

Printed as ratios to the floor; saved to bench/results/serving.{json,txt,png}. Targets are reported
as met or not met, never asserted.
"""

from __future__ import annotations

import asyncio
import base64
import io
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from bench.harness import (
    group_cpu_seconds,
    load_average,
    machine,
    machine_lines,
    progress,
    save,
    say,
    start_torchserve,
    summary_ms,
    table,
    verdict,
)
from model_store.ports import free_port

PHOTO_SIZE = (1280, 960)  # what a messenger sends for a phone photo (Telegram: 1280 px max side)
REQUESTS, WARMUP = 50, 3
WINDOW_S = 12.0
CONCURRENCY = (1, 4, 8)
BATCH_SIZE, BATCH_DELAY_MS = 8, 10
API_TOKEN, INTERNAL_TOKEN = "bench-client-token", "bench-internal-token"
TARGET_GATEWAY, TARGET_DIRECT = 1.2, 1.1
TARGET_BATCH_SPEEDUP, TARGET_C1_SLOWDOWN = 1.5, 1.1


# -- inputs --------------------------------------------------------------------------------------


def make_photo(size: tuple[int, int] = PHOTO_SIZE, seed: int = 0, **options) -> bytes:
    """A photo-like JPEG: smooth gradients, a few blurred blobs and sensor noise (not a flat colour).
    `options`: more options for Pillow's JPEG encoder (e.g. `exif`)."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [120 + 60 * np.sin(x / 170), 90 + 50 * np.cos(y / 130), 60 + 40 * np.sin((x + y) / 250)], -1
    )
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(25):
        cx, cy, r = rng.integers(0, width), rng.integers(0, height), rng.integers(30, 220)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    image = image.filter(ImageFilter.GaussianBlur(3))
    noisy = np.asarray(image, np.float32) + rng.normal(0, 6, (height, width, 3))
    buffer = io.BytesIO()
    pixels = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    pixels.save(buffer, format="JPEG", quality=88, **options)
    return buffer.getvalue()


def unique(photo: bytes, index: int) -> bytes:
    """The same pixels with a different sha256 (bytes after the JPEG end marker are ignored)."""
    return photo + b"bench" + index.to_bytes(8, "big", signed=True)


def write_vit_b(out_dir: Path) -> None:
    """A ViT-B/16 Food-101 checkpoint as `save_pretrained` writes one (random weights)."""
    from model_store.checkpoint import write_random_vit

    write_random_vit(out_dir)


def build_store(work: Path) -> tuple[Path, Path, dict]:
    """checkpoint dir (via prepare_checkpoint on a local dir), food101.mar and nutrition-v0.mar."""
    from foodcal.settings import load_settings
    from model_store import archive
    from model_store.build import food101_config, reference_model
    from model_store.checkpoint import prepare_checkpoint

    source = work / "vit-b-source"
    source.mkdir()
    write_vit_b(source)
    checkpoint_dir = work / "checkpoints" / "food101"
    identity = prepare_checkpoint(str(source), checkpoint_dir)
    shutil.rmtree(source)
    store = work / "mar"
    shipped_config = work / "food101-config.yaml"  # the same config `make models` ships
    shipped_config.write_text(food101_config(load_settings(_env_file=None)))
    archive.build_food101_mar(checkpoint_dir, store / "food101.mar", shipped_config)
    archive.build_nutrition_mar(
        reference_model(checkpoint_dir), 0, store / archive.nutrition_mar_name(0),
        classifier_version=identity["version"],
    )  # fmt: skip
    return checkpoint_dir, store, identity


# -- 1. the floor: the handlers in-process -------------------------------------------------------


class InProcess:
    """Food101Handler + NutritionHandler with a mock context, as tests/test_handlers.py runs them."""

    def __init__(self, food101_mar: Path, nutrition_mar: Path, work: Path) -> None:
        unpacked = {}
        for name, mar_path in (("food101", food101_mar), ("nutrition", nutrition_mar)):
            unpacked[name] = work / f"{name}-unpacked"
            with zipfile.ZipFile(mar_path) as mar:
                mar.extractall(unpacked[name])  # handler, weights and modules, flat, as TorchServe does
        sys.path[:0] = [str(unpacked["food101"]), str(unpacked["nutrition"])]
        import food101_handler
        import nutrition_handler

        def context(model_dir: Path) -> SimpleNamespace:
            return SimpleNamespace(system_properties={"model_dir": str(model_dir)}, manifest={})

        self.food = food101_handler.Food101Handler()
        self.food.initialize(context(unpacked["food101"]))
        self.nutrition = nutrition_handler.NutritionHandler()
        self.nutrition.initialize(context(unpacked))
        self.handler_threads = torch.get_num_threads()  # what the handlers set (FOODCAL_TORCH_THREADS)

    def __call__(self, image: bytes) -> dict:
        food, nutrition = self.food, self.nutrition
        (classified,) = food.postprocess(food.inference(food.preprocess([{"data": bytearray(image)}])))
        row = {
            "embedding": bytearray(base64.b64decode(classified["embedding"])),
            "probabilities": bytearray(base64.b64decode(classified["probabilities"])),
        }
        (predicted,) = nutrition.postprocess(nutrition.inference(nutrition.preprocess([row])))
        return predicted


def time_sync(call: Callable[[], object], requests: int = REQUESTS, warmup: int = WARMUP) -> dict:
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(requests):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return summary_ms(seconds)


async def time_interleaved(paths: dict[str, Callable[[int], Awaitable[object]]]) -> dict[str, dict]:
    """One request of each path per round, in a rotating order, so that load from other processes
    on this machine falls on every path alike (their ratios are what this benchmark reports)."""
    names = list(paths)
    for index in range(WARMUP):
        for name in names:
            await paths[name](-1 - index)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for index in range(REQUESTS):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            await paths[name](index)
            seconds[name].append(time.perf_counter() - start)
    return {name: summary_ms(values) for name, values in seconds.items()}


# -- 3. the gateway, in-process as tests/conftest.py starts it ------------------------------------


async def start_gateway(work: Path, store: Path, torchserve_config):
    import grpc

    import gateway.__main__ as gateway_main
    from foodcal.rpc.grpc_server import message_size_options, start_server
    from foodcal.settings import load_settings
    from foodcal.store import Database
    from foodcal.v1 import gateway_pb2_grpc

    port = free_port()
    settings = load_settings(
        _env_file=None,
        api_tokens=[API_TOKEN],
        client_rate_per_minute=0,  # a benchmark sends far more than a person would
        internal_token=INTERNAL_TOKEN,
        database_url=f"sqlite:///{work}/foodcal.db",
        data_dir=work / "data",
        upload_dir=work / "uploads",
        models_dir=work / "models",
        model_store_dir=store,
        use_chatgpt=False,
        openai_api_key="",
        torchserve_endpoints=[f"127.0.0.1:{torchserve_config.grpc_inference_port}"],
        torchserve_management=[f"127.0.0.1:{torchserve_config.grpc_management_port}"],
        labeler_address=f"127.0.0.1:{free_port()}",  # never called with USE_CHATGPT=false
        trainer_address=f"127.0.0.1:{free_port()}",
        gateway_port=port,
    )
    db = Database(settings.database_url)
    db.migrate()
    server = await start_server(gateway_main.build(settings, db, port), "127.0.0.1", port)
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=message_size_options(settings.grpc_max_message_bytes)
    )
    return settings, db, server, channel, gateway_pb2_grpc.GatewayServiceStub(channel)


# -- 4. throughput -------------------------------------------------------------------------------

BATCHED = "food101_batched"  # food101.mar registered again with 1 worker, batching on
UNBATCHED = "food101_unbatched"  # ... and with 1 worker, batching off


async def register_batched(client, name: str = BATCHED, batch_size: int = BATCH_SIZE) -> float:
    """food101.mar again under another name with 1 worker (all stay registered, so off and on are
    measured alternately under the same machine load; the shipped food101 has a worker per core)."""
    from foodcal.torchserve import management_pb2

    request = management_pb2.RegisterModelRequest(
        url="food101.mar", model_name=name, initial_workers=1, synchronous=True,
        batch_size=batch_size, max_batch_delay=BATCH_DELAY_MS,
    )  # fmt: skip
    start = time.perf_counter()
    await client.replicas[0].management.RegisterModel(request, timeout=300)
    await scale_workers(client, name, 1)  # the archive's own config asks for a worker per core
    described = (await client.describe(name))[0]
    assert described["batchSize"] == batch_size, described  # a set-up check, not a timing
    return time.perf_counter() - start


async def classify_with(client, model: str, image: bytes):
    """TorchServeClient.classify, against a model name of our choice (its code, its parsing)."""
    return await client.classify(image, model=model)


async def throughput(
    call: Callable[[], Awaitable[object]], concurrency: int, window_s: float, pgid: int | None = None
) -> dict:
    """`concurrency` clients in a closed loop; a client starts no new request after the window.

    With `pgid`, also TorchServe's CPU seconds (java + workers) per request: unlike req/s, barely
    moved by other processes taking CPU from this machine."""
    cpu_before = group_cpu_seconds(pgid) if pgid else 0.0
    seconds: list[float] = []
    stop_at = time.perf_counter() + window_s

    async def client() -> None:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            await call()
            seconds.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu = group_cpu_seconds(pgid) - cpu_before if pgid else float("nan")
    return {"concurrency": concurrency, "requests": len(seconds), "elapsed_s": elapsed,
            "requests_per_s": len(seconds) / elapsed, "torchserve_cpu_s": cpu,
            "torchserve_cpu_ms_per_request": cpu * 1000 / max(len(seconds), 1),
            "torchserve_cores_busy": cpu / elapsed, **summary_ms(seconds)}  # fmt: skip


async def throughput_pairs(
    calls: dict[str, Callable[[], Awaitable[object]]], levels, label: str, pgid: int | None = None
) -> dict:
    """For each concurrency, a window of each mode, alternating which goes first."""
    runs: dict[str, list[dict]] = {mode: [] for mode in calls}
    for call in calls.values():
        await asyncio.gather(*(call() for _ in range(max(levels))))  # warm-up, not counted
    for position, concurrency in enumerate(levels):
        modes = list(calls) if position % 2 == 0 else list(calls)[::-1]
        for mode in modes:
            progress(
                f"throughput {label}, batching {mode}, {concurrency} concurrent clients, {WINDOW_S:.0f} s"
            )
            runs[mode].append(await throughput(calls[mode], concurrency, WINDOW_S, pgid))
    return runs


async def scale_workers(client, model: str, workers: int) -> float:
    """What-if: more workers for `model` (TorchServe's ScaleWorker; our client has no call for it)."""
    from foodcal.torchserve import management_pb2

    request = management_pb2.ScaleWorkerRequest(
        model_name=model, min_worker=workers, max_worker=workers, synchronous=True
    )
    start = time.perf_counter()
    await client.replicas[0].management.ScaleWorker(request, timeout=300)
    workers_now = len((await client.describe(model))[0]["workers"])
    assert workers_now == workers, workers_now  # a set-up check, not a timing
    return time.perf_counter() - start


# -- the run -------------------------------------------------------------------------------------


async def run(work: Path, info: dict) -> dict:
    from foodcal.store import ImageStore
    from foodcal.v1 import gateway_pb2
    from model_store.archive import nutrition_mar_name
    from model_store.server import wait_until_ready
    from model_store.worker.photos import decode_for_model, validate_image

    results: dict = {"photo": {}, "latency": {}, "throughput": {}, "setup_s": {}}
    photo = make_photo()
    results["photo"] = {"size": list(PHOTO_SIZE), "bytes": len(photo)}

    progress("building a ViT-B/16 checkpoint, food101.mar and nutrition-v0.mar")
    start = time.perf_counter()
    _, store, identity = build_store(work)
    results["setup_s"]["build_models"] = time.perf_counter() - start
    results["classifier"] = identity

    progress("starting TorchServe")
    start = time.perf_counter()
    process, client = start_torchserve(store, work / "torchserve")
    try:
        await wait_until_ready(client, process, timeout_s=300)
        results["setup_s"]["torchserve_ready"] = time.perf_counter() - start
        shipped = (await client.describe("food101"))[0]
        results["shipped"] = {"workers": len(shipped["workers"]), "batch_size": shipped["batchSize"],
                              "max_batch_delay_ms": shipped["maxBatchDelay"]}  # fmt: skip
        progress(f"registering food101.mar again as {BATCHED} (batch {BATCH_SIZE}) and {UNBATCHED} (batch 1)")
        results["setup_s"]["register_batched"] = await register_batched(client)
        results["setup_s"]["register_batched"] += await register_batched(client, UNBATCHED, 1)

        floor = InProcess(store / "food101.mar", store / nutrition_mar_name(0), work)
        threads = floor.handler_threads
        cores = max(info["cpu_count"] or 1, threads)
        info["handler_torch_threads"] = threads
        _, db, server, channel, gateway = await start_gateway(work, store, process.config)
        metadata = (("authorization", f"Bearer {API_TOKEN}"),)

        async def in_process(_index: int) -> None:
            floor(photo)

        async def in_process_all_cores(_index: int) -> None:
            torch.set_num_threads(cores)
            try:
                floor(photo)
            finally:
                torch.set_num_threads(threads)

        async def direct(_index: int = 0) -> None:
            classified = await client.classify(photo)
            await client.predict_nutrition(classified.embedding, classified.probabilities)

        async def analyze(index: int) -> None:
            # A new sha256 per request (same pixels), so the image store writes a file every time.
            request = gateway_pb2.AnalyzeMealRequest(image=unique(photo, index), filename="meal.jpg")
            await gateway.AnalyzeMeal(request, metadata=metadata, timeout=120)

        paths = {"floor": in_process, "torchserve_direct": direct, "analyze_meal": analyze}
        if cores > threads:
            paths["floor_all_cores"] = in_process_all_cores
        progress(f"latency: {REQUESTS} rounds of {', '.join(paths)} (interleaved)")
        try:
            latency = await time_interleaved(paths)
        finally:
            await channel.close()
            await server.stop(0)
            db.dispose()
        latency["floor"]["torch_threads"] = threads
        if "floor_all_cores" in latency:
            latency["floor_all_cores"]["torch_threads"] = cores
        results["latency"] = latency

        progress("in-process: validate_image, decode_for_model, ImageStore.put")
        short_side = floor.food.classifier.input_short_side  # as the worker decodes for its processor
        latency["step_decode_for_model"] = time_sync(lambda: decode_for_model(photo, short_side))
        latency["step_validate_image"] = time_sync(lambda: validate_image(photo))
        images, counter = ImageStore(work / "put-test"), iter(range(10**6))
        latency["step_image_store_put"] = time_sync(lambda: images.put(unique(photo, next(counter))))

        def direct_on(model: str):
            async def call() -> None:
                classified = await classify_with(client, model, photo)
                await client.predict_nutrition(classified.embedding, classified.probabilities)

            return call

        calls = {"off": direct_on(UNBATCHED), "on": direct_on(BATCHED)}
        pgid = process.process.pid  # start_new_session: its own process group
        runs = await throughput_pairs(calls, CONCURRENCY, "1 worker", pgid)
        described = (await client.describe(UNBATCHED))[0]
        results["throughput"]["off"] = {
            "batch_size": described["batchSize"],
            "max_batch_delay_ms": described["maxBatchDelay"],
            "runs": runs["off"],
        }
        results["throughput"]["on"] = {"batch_size": BATCH_SIZE, "max_batch_delay_ms": BATCH_DELAY_MS,
                                       "runs": runs["on"]}  # fmt: skip

        progress("a worker per core (2), batching off and on")
        for model in (UNBATCHED, BATCHED):
            await scale_workers(client, model, 2)
        two = await throughput_pairs(calls, (max(CONCURRENCY),), "2 workers", pgid)
        results["throughput"]["what_if_two_workers"] = [
            {"workers": 2, "batch_size": results["throughput"][mode]["batch_size"], **two[mode][0]}
            for mode in ("on", "off")
        ]
    finally:
        await client.close()
        process.stop()
    return results


# -- report --------------------------------------------------------------------------------------


def analyse(results: dict) -> dict:
    latency, off, on = (
        results["latency"],
        results["throughput"]["off"]["runs"],
        results["throughput"]["on"]["runs"],
    )
    floor = latency["floor"]["p50_ms"]
    off_by_c = {r["concurrency"]: r for r in off}
    on_by_c = {r["concurrency"]: r for r in on}
    c_max = max(CONCURRENCY)
    ratios = {
        "direct_p50_over_floor": latency["torchserve_direct"]["p50_ms"] / floor,
        "gateway_p50_over_floor": latency["analyze_meal"]["p50_ms"] / floor,
        "batching_speedup_at_max_concurrency": on_by_c[c_max]["requests_per_s"]
        / off_by_c[c_max]["requests_per_s"],
        "batching_c1_p50_change": on_by_c[1]["p50_ms"] / off_by_c[1]["p50_ms"],
        "batching_cpu_per_request_at_max_concurrency": on_by_c[c_max]["torchserve_cpu_ms_per_request"]
        / off_by_c[c_max]["torchserve_cpu_ms_per_request"],
    }
    if "floor_all_cores" in latency:
        ratios["floor_all_cores_over_floor"] = latency["floor_all_cores"]["p50_ms"] / floor
    targets = {
        "analyze_meal_p50_le_1.2x_floor": ratios["gateway_p50_over_floor"] <= TARGET_GATEWAY,
        "torchserve_direct_p50_le_1.1x_floor": ratios["direct_p50_over_floor"] <= TARGET_DIRECT,
        "batching_ge_1.5x_at_8_clients": ratios["batching_speedup_at_max_concurrency"]
        >= TARGET_BATCH_SPEEDUP,
        "batching_c1_p50_within_10pct": ratios["batching_c1_p50_change"] <= TARGET_C1_SLOWDOWN,
    }
    return {"ratios": ratios, "targets": targets}


def report(info: dict, results: dict, verdicts: dict) -> str:
    latency, ratios, targets = results["latency"], verdicts["ratios"], verdicts["targets"]
    floor = latency["floor"]["p50_ms"]
    photo = results["photo"]
    threads = latency["floor"]["torch_threads"]

    def row(name: str, key: str, note: str = "") -> list[str]:
        s = latency[key]
        return [
            name,
            str(s["n"]),
            f"{s['p50_ms']:.1f}",
            f"{s['p95_ms']:.1f}",
            f"{s['p50_ms'] / floor:.2f}×",
            note,
        ]

    paths = [
        row(f"1. floor: handlers in-process (torch threads {threads}, as in the worker)", "floor", "= 1.00"),
        row("2. TorchServe direct: classify + predict_nutrition (gRPC)", "torchserve_direct",
            f"target ≤ {TARGET_DIRECT}×: {verdict(targets['torchserve_direct_p50_le_1.1x_floor'])}"),
        row("3. AnalyzeMeal via gateway (USE_CHATGPT=false, SQLite, image store)", "analyze_meal",
            f"target ≤ {TARGET_GATEWAY}×: {verdict(targets['analyze_meal_p50_le_1.2x_floor'])}"),
    ]  # fmt: skip
    info_rows = [
        row("worker step: decode_for_model (one decode at reduced scale)", "step_decode_for_model"),
        row("gateway step: validate_image (headers only)", "step_validate_image"),
        row("gateway step: ImageStore.put of a new photo (fsync)", "step_image_store_put"),
    ]  # fmt: skip
    if "floor_all_cores" in latency:
        info_rows.insert(
            0,
            row(f"floor with torch threads {latency['floor_all_cores']['torch_threads']}", "floor_all_cores",
                "not what the worker runs"),
        )  # fmt: skip
    off, on = results["throughput"]["off"], results["throughput"]["on"]
    throughput_rows = []
    for a, b in zip(off["runs"], on["runs"], strict=True):
        throughput_rows.append([
            str(a["concurrency"]),
            f"{a['requests_per_s']:.2f} ({a['requests']})", f"{a['p50_ms']:.0f} / {a['p95_ms']:.0f}",
            f"{a['torchserve_cpu_ms_per_request']:.0f} / {a['torchserve_cores_busy']:.2f}",
            f"{b['requests_per_s']:.2f} ({b['requests']})", f"{b['p50_ms']:.0f} / {b['p95_ms']:.0f}",
            f"{b['torchserve_cpu_ms_per_request']:.0f} / {b['torchserve_cores_busy']:.2f}",
            f"{b['requests_per_s'] / a['requests_per_s']:.2f}×",
        ])  # fmt: skip
    c_max = max(CONCURRENCY)
    off_max = off["runs"][-1]["requests_per_s"]
    what_if_rows = [
        [f"2 workers × 1 thread, batch_size {r['batch_size']}", str(r["concurrency"]),
         f"{r['requests_per_s']:.2f} ({r['requests']})", f"{r['p50_ms']:.0f} / {r['p95_ms']:.0f}",
         f"{r['torchserve_cpu_ms_per_request']:.0f} / {r['torchserve_cores_busy']:.2f}",
         f"{r['requests_per_s'] / off_max:.2f}×"]
        for r in results["throughput"].get("what_if_two_workers", [])
    ]  # fmt: skip
    shipped = results["shipped"]
    lines = [
        "bench.serving — ViT-B/16-sized Food-101 classifier + nutrition head (v0), one run",
        *machine_lines(info),
        f"photo: {photo['size'][0]}×{photo['size'][1]} JPEG, {photo['bytes'] // 1024} KB "
        "(synthetic, photo-like); "
        f"classifier {Path(results['classifier']['version']).name} (random weights); "
        f"TorchServe: food101 as shipped ({shipped['workers']} workers, batch {shipped['batch_size']}) "
        "for the latency rows, "
        f"handler torch threads {threads}; {REQUESTS} requests per latency row after {WARMUP} warm-up",
        "",
        table(["path (single request, sequential)", "n", "p50 ms", "p95 ms", "p50 / floor", "verdict"],
              paths),
        "",
        "for explanation (not targets):",
        table(["measured in-process", "n", "p50 ms", "p95 ms", "p50 / floor", "note"], info_rows),
        "",
        f"throughput, TorchServe direct (classify + predict_nutrition), {WINDOW_S:.0f} s closed-loop window "
        "each; "
        f"1 worker; batching on = food101.mar registered again as {BATCHED} with batch_size "
        f"{on['batch_size']}, max_batch_delay {on['max_batch_delay_ms']} ms (off: {UNBATCHED}, batch_size "
        f"{off['batch_size']})",
        table(["clients", "off: req/s (n)", "off: p50/p95 ms", "off: TS CPU ms/req / cores", "on: req/s (n)",
               "on: p50/p95 ms", "on: TS CPU ms/req / cores", "on / off req/s"], throughput_rows),
        "(TS CPU = user+system CPU of TorchServe's java and workers in the window, per request; "
        "cores = CPU s / s)",
        "",
        f"a worker per core (2 × 1 thread), batch {on['batch_size']} against batch 1 "
        f"(shipped: batch {shipped['batch_size']})",
        table(["configuration", "clients", "req/s (n)", "p50/p95 ms", "TS CPU ms/req / cores",
               f"vs off, 1 worker, {c_max} clients"],
              what_if_rows),
        "",
        table(["target", "measured", "verdict"], [
            [f"AnalyzeMeal p50 ≤ {TARGET_GATEWAY}× floor", f"{ratios['gateway_p50_over_floor']:.2f}×",
             verdict(targets["analyze_meal_p50_le_1.2x_floor"])],
            [f"TorchServe direct p50 ≤ {TARGET_DIRECT}× floor", f"{ratios['direct_p50_over_floor']:.2f}×",
             verdict(targets["torchserve_direct_p50_le_1.1x_floor"])],
            [f"batching ≥ {TARGET_BATCH_SPEEDUP}× throughput at {c_max} clients",
             f"{ratios['batching_speedup_at_max_concurrency']:.2f}×",
             verdict(targets["batching_ge_1.5x_at_8_clients"])],
            ["batching raises p50 at 1 client by ≤ 10%", f"{ratios['batching_c1_p50_change']:.2f}×",
             verdict(targets["batching_c1_p50_within_10pct"])],
            [f"TorchServe CPU per request at {c_max} clients, on / off",
             f"{ratios['batching_cpu_per_request_at_max_concurrency']:.2f}×", "(info)"],
        ]),
        f"(setup, not timed above: models {results['setup_s']['build_models']:.0f} s, TorchServe ready "
        f"{results['setup_s']['torchserve_ready']:.0f} s, register {BATCHED} "
        f"{results['setup_s']['register_batched']:.0f} s)",
    ]  # fmt: skip
    return "\n".join(lines)


def chart(path: Path, results: dict, verdicts: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    latency = results["latency"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    keys = [
        ("floor", "floor"),
        ("torchserve_direct", "TorchServe\ndirect"),
        ("analyze_meal", "AnalyzeMeal\ngateway"),
    ]
    if "floor_all_cores" in latency:
        keys.insert(1, ("floor_all_cores", "floor\nall cores"))
    x = np.arange(len(keys))
    p50 = [latency[k]["p50_ms"] for k, _ in keys]
    p95 = [latency[k]["p95_ms"] for k, _ in keys]
    left.bar(x - 0.2, p50, 0.4, label="p50")
    left.bar(x + 0.2, p95, 0.4, label="p95")
    for i, value in enumerate(p50):
        left.annotate(
            f"{value / latency['floor']['p50_ms']:.2f}×", (i - 0.2, value), ha="center", va="bottom"
        )
    left.set_xticks(x, [name for _, name in keys])
    left.set_ylabel("ms per request")
    left.set_title("single request latency (p50 / floor annotated)")
    left.legend()
    for mode, colour in (("off", "tab:red"), ("on", "tab:green")):
        runs = results["throughput"][mode]["runs"]
        right.plot([r["concurrency"] for r in runs], [r["requests_per_s"] for r in runs], "o-", color=colour,
                   label=f"batching {mode} (batch {results['throughput'][mode]['batch_size']})")  # fmt: skip
    for r in results["throughput"].get("what_if_two_workers", []):
        right.plot([r["concurrency"]], [r["requests_per_s"]], "s" if r["batch_size"] > 1 else "D",
                   color="tab:green" if r["batch_size"] > 1 else "tab:red", fillstyle="none", markersize=9,
                   label=f"2 workers, batch {r['batch_size']}")  # fmt: skip
    right.set_xticks(list(CONCURRENCY))
    right.set_xlabel("concurrent clients")
    right.set_ylabel("requests / s")
    right.set_ylim(bottom=0)
    speedup = verdicts["ratios"]["batching_speedup_at_max_concurrency"]
    right.set_title(f"throughput, TorchServe direct (batching at {max(CONCURRENCY)}: {speedup:.2f}×)")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="foodcal-bench-serving-"))
    try:
        results = asyncio.run(run(work, info))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info["load_average_at_end"] = load_average()
    verdicts = analyse(results)
    text = report(info, results, verdicts)
    say(text)
    json_path, png_path = save("serving", {"machine": info, **results, **verdicts}, text)
    chart(png_path, results, verdicts)
    say(f"\nsaved {json_path} and {png_path}")


if __name__ == "__main__":
    main()
