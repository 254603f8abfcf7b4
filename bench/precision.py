"""`python -m bench.precision`: the classifier in fp32, bf16 and int8, side by side in one run.

On the ViT-B/16 shape (random backbone, built locally: nateraw/food is a ViT-B/16; the head fitted
to be as confident as a fine-tuned model's, `model_store.confident`), on the photo the
gateway hands TorchServe (a 1280x960 phone photo as sent; the worker decodes it at reduced scale):

1. in process, one thread (as a TorchServe worker): p50 of preprocess + forward, and of the forward
   alone, with the achieved GFLOP/s against this core's ceiling for the same arithmetic (a measured
   2048² GEMM);
2. through TorchServe (the shipped worker-per-core config, batch 1): 8 clients, requests per second,
   after a minute of traffic that lets java's JIT settle (a server's steady state);
3. the accuracy guard's numbers (model_store/precision.py) and what `auto` chose;
4. AnalyzeMeal end to end at the chosen precision against the classifier's own in-process time,
   request by request in turn (each AnalyzeMeal followed by one in-process pass), so both see the
   same moment of a machine whose speed drifts.

Printed as ratios; saved to bench/results/precision.{json,txt}. Never a timed assertion.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.harness import (
    load_average,
    machine,
    machine_lines,
    progress,
    save,
    say,
    start_torchserve,
    table,
    verdict,
)
from bench.serving import API_TOKEN, make_photo, start_gateway, time_sync, unique
from model_store.worker.food101_model import PRECISIONS, Food101Classifier
from model_store.worker.photos import decode_for_model

REQUESTS, WINDOW_S, CLIENTS = 20, 12.0, 8
JVM_WARMUP_S = 60.0
TARGET_THROUGHPUT, TARGET_ANALYZE = 3.0, 1.15


def gemm_peaks(size: int = 2048, repeat: int = 5) -> dict[str, float]:
    """This core's GFLOP/s on one large GEMM in each precision's own arithmetic (one thread, as a
    worker runs): fp32 and bf16 matmuls, and int8 through the same dynamic-quantised `Linear` the
    int8 classifier uses. A measured ceiling: a vendor's FLOP-per-cycle table would not know AMX
    from AVX-512, or a Zen 4's halved AVX-512 from a Xeon's."""
    from model_store.worker.food101_model import _quantize_linears

    a = torch.randn(size, size)
    a16 = a.bfloat16()
    int8 = _quantize_linears(torch.nn.Sequential(torch.nn.Linear(size, size, bias=False)), keep=[])
    calls = {"fp32": lambda: torch.mm(a, a), "bf16": lambda: torch.mm(a16, a16), "int8": lambda: int8(a)}
    with torch.inference_mode():
        p50_ms = {precision: time_sync(call, repeat, warmup=1)["p50_ms"] for precision, call in calls.items()}
    return {precision: 2 * size**3 / (ms / 1000) / 1e9 for precision, ms in p50_ms.items()}


def forward_flops(classifier: Food101Classifier, pixels: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        classifier(pixels)
    return float(counter.get_total_flops())


def build(work: Path) -> tuple[dict[str, Path], dict, Path]:
    """One ViT-B/16 checkpoint prepared with `auto` (its guard measures every precision), then one
    food101 archive per precision, and nutrition v0."""
    from foodcal.settings import load_settings
    from model_store import archive
    from model_store.build import food101_config, reference_model
    from model_store.checkpoint import prepare_checkpoint, write_random_vit
    from model_store.confident import make_confident

    source = work / "vit-b"
    write_random_vit(source)
    make_confident(source)  # as sure of itself as a fine-tuned model: a random head passes anything
    base = work / "checkpoints" / "auto"
    identity = prepare_checkpoint(str(source), base, "auto")
    store, config = work / "mar", work / "food101-config.yaml"
    config.write_text(food101_config(load_settings(_env_file=None)))  # as `make models` ships it
    checkpoints = {}
    for precision in PRECISIONS:
        checkpoint = work / "checkpoints" / precision
        shutil.copytree(base, checkpoint)
        (checkpoint / "foodcal_classifier.json").write_text(json.dumps({**identity, "precision": precision}))
        archive.build_food101_mar(checkpoint, store / f"food101-{precision}.mar", config)
        checkpoints[precision] = checkpoint
    shutil.copyfile(store / f"food101-{identity['precision']}.mar", store / "food101.mar")
    archive.build_nutrition_mar(reference_model(base), 0, store / archive.nutrition_mar_name(0))
    return checkpoints, identity, store


def in_process(classifiers: dict[str, Food101Classifier], photo: bytes) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fp32 = classifiers["fp32"]
        pixels = fp32.pixels([decode_for_model(photo, fp32.input_short_side)])
        flops = forward_flops(fp32, pixels)
        for classifier in classifiers.values():
            classifier(classifier.pixels([decode_for_model(photo, classifier.input_short_side)]))  # warm-up
        whole = {p: [] for p in classifiers}
        forward = {p: [] for p in classifiers}
        for _ in range(REQUESTS):  # interleaved: the same machine load for every precision
            for precision, classifier in classifiers.items():
                start = time.perf_counter()
                batch = classifier.pixels(
                    [decode_for_model(photo, classifier.input_short_side)]
                )  # as a worker
                middle = time.perf_counter()
                classifier(batch)
                end = time.perf_counter()
                whole[precision].append(end - start)
                forward[precision].append(end - middle)
        peaks = gemm_peaks()
    finally:
        torch.set_num_threads(threads)
    results: dict = {"gemm_peak_gflops": peaks}
    for precision in classifiers:
        forward_s = statistics.median(forward[precision])
        results[precision] = {
            "p50_ms": statistics.median(whole[precision]) * 1000,
            "forward_p50_ms": forward_s * 1000,
            "gflops_per_s": flops / forward_s / 1e9,
        }
    results["forward_gflop"] = flops / 1e9
    return results


def one_request_in_process(classifier: Food101Classifier, photo: bytes) -> float:
    """Seconds of one photo through the classifier in this process, as a worker runs it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        classifier(classifier.pixels([decode_for_model(photo, classifier.input_short_side)]))
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


async def serve(store: Path, work: Path, photo: bytes, chosen: str, classifier: Food101Classifier) -> dict:
    from foodcal.torchserve import management_pb2
    from foodcal.v1 import gateway_pb2
    from model_store.server import wait_until_ready

    process, client = start_torchserve(store, work / "torchserve")
    results: dict = {"throughput": {}}
    try:
        await wait_until_ready(client, process, timeout_s=300)
        shipped = (await client.describe("food101"))[0]
        workers = len(shipped["workers"])
        for precision in PRECISIONS:
            progress(f"registering food101-{precision}.mar ({workers} workers, batch 1)")
            request = management_pb2.RegisterModelRequest(
                url=f"food101-{precision}.mar", model_name=f"food101_{precision}",
                initial_workers=workers, synchronous=True, batch_size=1,
            )  # fmt: skip
            await client.replicas[0].management.RegisterModel(request, timeout=300)

        async def window(model: str, seconds: float = WINDOW_S) -> float:
            stop_at, count = time.perf_counter() + seconds, 0

            async def one_client() -> None:
                nonlocal count
                while time.perf_counter() < stop_at:
                    classified = await client.classify(photo, model=model)
                    await client.predict_nutrition(classified.embedding, classified.probabilities)
                    count += 1

            start = time.perf_counter()
            await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
            return count / (time.perf_counter() - start)

        for precision in PRECISIONS:  # warm-up
            await asyncio.gather(
                *(client.classify(photo, model=f"food101_{precision}") for _ in range(CLIENTS))
            )
        # Steady state, not TorchServe's first minute: java JIT-compiles its hot paths meanwhile, and
        # its CPU per request (classify + nutrition) falls from ~10 to ~5.5 ms (measured per process).
        progress(f"warming TorchServe's JVM: {JVM_WARMUP_S:.0f} s of {CLIENTS} clients")
        await window(f"food101_{chosen}", JVM_WARMUP_S)
        runs = {p: [] for p in PRECISIONS}
        for round_ in range(2):  # two rounds, the order reversed: drifting load hits all alike
            for precision in PRECISIONS if round_ == 0 else PRECISIONS[::-1]:
                progress(f"{CLIENTS} clients on food101_{precision}, {WINDOW_S:.0f} s")
                runs[precision].append(await window(f"food101_{precision}"))
        results["throughput"] = {
            p: {"requests_per_s": statistics.mean(r), "runs": r} for p, r in runs.items()
        }

        progress(
            f"AnalyzeMeal at the chosen precision ({chosen}), {REQUESTS} requests, each followed by "
            "the classifier in process"
        )
        _, db, server, channel, gateway = await start_gateway(work, store, process.config)
        metadata = (("authorization", f"Bearer {API_TOKEN}"),)
        seconds, alone = [], []
        try:
            for index in range(REQUESTS + 2):
                request = gateway_pb2.AnalyzeMealRequest(image=unique(photo, index), filename="meal.jpg")
                start = time.perf_counter()
                await gateway.AnalyzeMeal(request, metadata=metadata, timeout=120)
                took = time.perf_counter() - start
                # The same moment's in-process time: this machine's speed drifts by 2x over minutes.
                in_process_s = one_request_in_process(classifier, photo)
                if index >= 2:  # the first two warm the path up
                    seconds.append(took)
                    alone.append(in_process_s)
        finally:
            await channel.close()
            await server.stop(0)
            db.dispose()
        results["classifier_in_process_interleaved_p50_ms"] = statistics.median(alone) * 1000
        results["analyze_meal_p50_ms"] = statistics.median(seconds) * 1000
    finally:
        await client.close()
        process.stop()
    return results


def report(info: dict, identity: dict, local: dict, served: dict) -> tuple[str, dict]:
    chosen, peaks = identity["precision"], local["gemm_peak_gflops"]
    fp32_rps = served["throughput"]["fp32"]["requests_per_s"]
    rows = []
    for precision in PRECISIONS:
        guard = identity["guard"].get(f"torch-{precision}", {})
        achieved = local[precision]["gflops_per_s"]
        rows.append(
            [
                precision + (" (chosen)" if precision == chosen else ""),
                f"{local[precision]['p50_ms']:.0f}",
                f"{local[precision]['forward_p50_ms']:.0f}",
                f"{achieved:.0f} ({achieved / peaks[precision]:.0%})",
                f"{served['throughput'][precision]['requests_per_s']:.2f}",
                f"{served['throughput'][precision]['requests_per_s'] / fp32_rps:.2f}×",
                f"{guard.get('embedding_cosine_min', float('nan')):.4f}",
                f"{guard.get('probability_max_difference', float('nan')):.4f}",
                f"{guard.get('top1_agreement', float('nan')):.0%}",
                f"{guard.get('calories_max_relative_difference', float('nan')):.2%}",
            ]
        )
    speedup = served["throughput"][chosen]["requests_per_s"] / fp32_rps
    alone = served["classifier_in_process_interleaved_p50_ms"]
    analyze_ratio = served["analyze_meal_p50_ms"] / alone
    targets = {
        "throughput_ge_3x_fp32": speedup >= TARGET_THROUGHPUT,
        "analyze_le_1_15x": analyze_ratio <= TARGET_ANALYZE,
    }
    lines = [
        "bench.precision — the classifier's precision, side by side (ViT-B/16 shape, random weights)",
        *machine_lines(info),
        f"forward pass: {local['forward_gflop']:.1f} GFLOP; this core's ceiling, one 2048² GEMM on one "
        f"thread: fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f}, int8 {peaks['int8']:.0f} GFLOP/s",
        "",
        table(
            [
                "precision",
                "p50 ms (1 thread)",
                "forward ms",
                "GFLOP/s (of its GEMM ceiling)",
                f"req/s, {CLIENTS} clients",
                "vs fp32",
                "emb. cosine",
                "max Δp",
                "top-1",
                "max Δkcal",
            ],
            rows,
        ),
        "",
        table(
            ["target", "measured", "verdict"],
            [
                [
                    f"chosen ({chosen}) throughput ≥ {TARGET_THROUGHPUT:.0f}× fp32 at {CLIENTS} clients",
                    f"{speedup:.2f}×",
                    verdict(targets["throughput_ge_3x_fp32"]),
                ],
                [
                    f"AnalyzeMeal p50 ≤ {TARGET_ANALYZE}× the classifier in process ({chosen})",
                    f"{served['analyze_meal_p50_ms']:.0f} ms / {alone:.0f} ms (interleaved) "
                    f"= {analyze_ratio:.2f}×",
                    verdict(targets["analyze_le_1_15x"]),
                ],
            ],
        ),
    ]
    payload = {
        "machine": info,
        "identity": identity,
        "in_process": local,
        "served": served,
        "targets": targets,
    }
    return "\n".join(lines), payload


def main() -> None:
    from bench.training import quiet_transformers

    quiet_transformers()
    info = machine()
    photo = make_photo()  # what the gateway hands TorchServe: the photo as sent
    work = Path(tempfile.mkdtemp(prefix="foodcal-bench-precision-"))
    try:
        progress("building a ViT-B/16 checkpoint; the guard measures every precision")
        checkpoints, identity, store = build(work)
        progress(f"in process, {REQUESTS} rounds of each precision")
        classifiers = {p: Food101Classifier(checkpoint, p) for p, checkpoint in checkpoints.items()}
        local = in_process(classifiers, photo)
        chosen = identity["precision"]
        served = asyncio.run(serve(store, work, photo, chosen, classifiers[chosen]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info["load_average_at_end"] = load_average()
    text, payload = report(info, identity, local, served)
    say(text)
    json_path, _ = save("precision", payload, text)
    say(f"\nsaved {json_path}")


if __name__ == "__main__":
    main()
