"""`python -m bench.runtimes`: torch and OpenVINO, fp32, bf16 and int8, on a classifier sure of itself.

The subject is the ViT-B/16 shape with random weights and a head fitted to be confident
(`model_store.confident`: top-1 typically > 0.8 on the guard photos, as a fine-tuned Food-101 model),
prepared as `make models` prepares it (`prepare_checkpoint` with FOOD101_RUNTIME=auto and
FOOD101_PRECISION=auto: converted, guarded, chosen). In one run:

1. the accuracy guard's numbers against torch fp32, and what `auto` serves;
2. the forward pass (one preprocessed photo, one thread as a worker runs) of each runtime x
   precision, interleaved round by round so a noisy machine slows every candidate alike;
3. this core's int8 limit in the same runtime: the best of three int8 GEMMs through OpenVINO (a Linear
   quantised by NNCF, as the classifier's), and the int8 forward pass's share of it;
4. through the real TorchServe (the shipped worker-per-core config, batch 1), 8 clients each sending
   a photo and its nutrition request in turn: requests per second of torch fp32, torch int8
   (dynamic quantisation, what FOOD101_PRECISION=int8 served before) and `auto`'s choice,
   interleaved, after the JVM's warm-up; each model's worker RSS (psutil, the frontend's children);
5. AnalyzeMeal p50 through the gateway at `auto`'s choice against the classifier's own in-process
   time, request by request in turn.

Ratios only, never a timed assertion; saved to bench/results/runtimes.{json,txt}.
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
from model_store.worker.classifier import open_classifier
from model_store.worker.photos import decode_for_model

ROUNDS = 10
# square, the ViT-B/16's fc1 on 8 photos' tokens, and a larger square: the best is the limit
GEMM_SHAPES = ((1024, 1024, 1024), (1576, 768, 3072), (2048, 2048, 2048))
CLIENTS, WINDOW_S, JVM_WARMUP_S, REQUESTS = 8, 12.0, 30.0, 20
TARGETS = {"fp32": 5.0, "torch_int8": 1.6, "limit_share": 0.60, "analyze": 1.10}
FORWARD_HEADERS = ["runtime precision", "forward ms", "vs torch fp32", "vs torch int8", "GOP/s",
                   "emb. cosine", "max Δp", "top-1", "max Δkcal", "guard"]  # fmt: skip
SERVED = {"torch-fp32": ("torch", "fp32"), "torch-int8": ("torch", "int8")}  # and "auto": its choice


def forward_flops(classifier, pixels: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        classifier(pixels)
    return float(counter.get_total_flops())


def openvino_gemm_limits(work: Path, repeat: int = 5) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) of OpenVINO's GEMMs on one thread, fp32 and int8 (a Linear quantised
    by NNCF exactly as the classifier's are), the best of GEMM_SHAPES: one 1024³ GEMM alone ran
    slower than the ViT's own int8 MatMuls (288 against 339 GOP/s), so it was no limit."""
    import nncf
    import openvino as ov

    from model_store.worker.openvino_model import compile_ir

    limits = {"fp32": 0.0, "int8": 0.0}
    for rows, inner, columns in GEMM_SHAPES:
        linear = torch.nn.Linear(inner, columns, bias=False).eval()
        x = torch.randn(rows, inner)
        model = ov.convert_model(linear, example_input=x)
        calibration = nncf.Dataset([torch.randn(rows, inner).numpy() for _ in range(2)])
        models = {"fp32": model, "int8": nncf.quantize(model, calibration, subset_size=2)}
        for name, ir in models.items():
            path = work / f"gemm_{name}.xml"
            ov.save_model(ir, path, compress_to_fp16=False)
            request = compile_ir(path, name, threads=1).create_infer_request()
            request.infer([x.numpy()])
            seconds = []
            for _ in range(repeat):
                start = time.perf_counter()
                request.infer([x.numpy()])
                seconds.append(time.perf_counter() - start)
            rate = 2 * rows * inner * columns / statistics.median(seconds) / 1e9
            limits[f"{name} {rows}x{inner}x{columns}"] = rate
            limits[name] = max(limits[name], rate)
    return limits


def timed_forward(classifiers: dict, pixels: torch.Tensor) -> dict[str, float]:
    torch.set_num_threads(1)
    for classifier in classifiers.values():
        classifier(pixels)
    seconds = {name: [] for name in classifiers}
    for _ in range(ROUNDS):
        for name, classifier in classifiers.items():
            start = time.perf_counter()
            classifier(pixels)
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1000 for name, values in seconds.items()}


def build(work: Path) -> tuple[Path, dict, Path, dict[str, Path]]:
    """The confident ViT-B/16 prepared with FOOD101_RUNTIME=auto, FOOD101_PRECISION=auto; one
    food101 archive per served model (torch fp32, torch int8, auto's choice), and nutrition v0."""
    from foodcal.settings import load_settings
    from model_store import archive
    from model_store.build import food101_config, reference_model
    from model_store.checkpoint import prepare_checkpoint, write_random_vit
    from model_store.confident import make_confident

    source = work / "vit-b"
    write_random_vit(source)
    make_confident(source)
    base = work / "checkpoints" / "prepared"
    identity = prepare_checkpoint(str(source), base, "auto", "auto")
    progress(f"auto serves {identity['runtime']} {identity['precision']}; {json.dumps(identity['guard'])}")
    store, config = work / "mar", work / "food101-config.yaml"
    config.write_text(food101_config(load_settings(_env_file=None)))  # as `make models` ships it
    served = {**SERVED, "auto": (identity["runtime"], identity["precision"])}
    checkpoints = {}
    for name, (runtime, precision) in served.items():
        if f"{runtime}-{precision}" not in identity["guard"]:
            continue  # torch int8 where this PyTorch has no int8 kernels
        checkpoint = work / "checkpoints" / name
        shutil.copytree(base, checkpoint)
        chosen = {**identity, "runtime": runtime, "precision": precision}
        (checkpoint / "foodcal_classifier.json").write_text(json.dumps(chosen))
        archive.build_food101_mar(checkpoint, store / f"food101-{name}.mar", config)
        checkpoints[name] = checkpoint
    shutil.copyfile(store / "food101-auto.mar", store / "food101.mar")
    archive.build_nutrition_mar(reference_model(base), 0, store / archive.nutrition_mar_name(0))
    return base, identity, store, checkpoints


def worker_pids(process) -> set[int]:
    """TorchServe's python workers: the frontend's descendants that run model_service_worker."""
    import psutil

    pids = set()
    for child in psutil.Process(process.process.pid).children(recursive=True):
        try:
            if any("model_service_worker" in part for part in child.cmdline()):
                pids.add(child.pid)
        except psutil.Error:
            continue
    return pids


def rss_mib(pids: set[int]) -> list[float]:
    import psutil

    return [round(psutil.Process(pid).memory_info().rss / 2**20) for pid in sorted(pids)]


def one_request_in_process(classifier, photo: bytes) -> float:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        classifier(classifier.pixels([decode_for_model(photo, classifier.input_short_side)]))
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


async def serve(store: Path, work: Path, photo: bytes, models: list[str], classifier) -> dict:
    """Throughput at CLIENTS clients and worker RSS of each model, AnalyzeMeal p50 at auto's."""
    from bench.serving import API_TOKEN, start_gateway, unique
    from foodcal.torchserve import management_pb2
    from foodcal.v1 import gateway_pb2
    from model_store.server import wait_until_ready

    process, client = start_torchserve(store, work / "torchserve")
    results: dict = {"throughput": {}, "worker_rss_mib": {}}
    try:
        await wait_until_ready(client, process, timeout_s=300)
        workers = len((await client.describe("food101"))[0]["workers"])
        for name in models:
            progress(f"registering food101-{name}.mar ({workers} workers, batch 1)")
            before = worker_pids(process)
            request = management_pb2.RegisterModelRequest(
                url=f"food101-{name}.mar", model_name=f"food101_{name}", initial_workers=workers,
                synchronous=True, batch_size=1,
            )  # fmt: skip
            await client.replicas[0].management.RegisterModel(request, timeout=600)
            await asyncio.gather(*(client.classify(photo, model=f"food101_{name}") for _ in range(CLIENTS)))
            results["worker_rss_mib"][name] = rss_mib(worker_pids(process) - before)

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

        progress(f"warming TorchServe's JVM: {JVM_WARMUP_S:.0f} s of {CLIENTS} clients")
        await window("food101_auto", JVM_WARMUP_S)
        runs: dict[str, list[float]] = {name: [] for name in models}
        for round_ in range(2):  # two rounds, the order reversed: drifting load hits all alike
            for name in models if round_ == 0 else models[::-1]:
                progress(f"{CLIENTS} clients on food101_{name}, {WINDOW_S:.0f} s")
                runs[name].append(await window(f"food101_{name}"))
        results["throughput"] = {name: statistics.mean(r) for name, r in runs.items()}

        progress(f"AnalyzeMeal at auto's choice, {REQUESTS} requests, each followed by one in process")
        _, db, server, channel, gateway = await start_gateway(work, store, process.config)
        metadata = (("authorization", f"Bearer {API_TOKEN}"),)
        seconds, alone = [], []
        try:
            for index in range(REQUESTS + 2):
                request = gateway_pb2.AnalyzeMealRequest(image=unique(photo, index), filename="meal.jpg")
                start = time.perf_counter()
                await gateway.AnalyzeMeal(request, metadata=metadata, timeout=120)
                took = time.perf_counter() - start
                in_process_s = one_request_in_process(classifier, photo)  # the same moment's speed
                if index >= 2:  # the first two warm the path up
                    seconds.append(took)
                    alone.append(in_process_s)
        finally:
            await channel.close()
            await server.stop(0)
            db.dispose()
        results["analyze_meal_p50_ms"] = statistics.median(seconds) * 1000
        results["classifier_in_process_p50_ms"] = statistics.median(alone) * 1000
    finally:
        await client.close()
        process.stop()
    return results


def report(info: dict, identity: dict, forward_ms: dict, flops: float, limits: dict, served: dict):
    auto = f"{identity['runtime']} {identity['precision']}"

    def gops(name: str) -> float:
        """The forward pass's rate, GOP/s, of `name` (a runtime precision; NaN where not measured)."""
        return flops / (forward_ms.get(name, float("nan")) / 1000) / 1e9

    rows = []
    for key, guard in identity["guard"].items():
        name = key.replace("-", " ")
        ms = forward_ms[name]
        rows.append([
            name + (" (auto)" if name == auto else ""), f"{ms:.0f}",
            f"{forward_ms['torch fp32'] / ms:.2f}×",
            f"{forward_ms.get('torch int8', float('nan')) / ms:.2f}×",
            f"{gops(name):.0f}", f"{guard['embedding_cosine_min']:.4f}",
            f"{guard['probability_max_difference']:.4f}", f"{guard['top1_agreement']:.0%}",
            f"{guard['calories_max_relative_difference']:.2%}", "pass" if guard["passed"] else "FAIL",
        ])  # fmt: skip
    share = gops("openvino int8") / limits["int8"]
    rps = served["throughput"]
    fp32_ratio = rps["auto"] / rps["torch-fp32"]
    int8_ratio = rps["auto"] / rps.get("torch-int8", float("nan"))
    analyze = served["analyze_meal_p50_ms"] / served["classifier_in_process_p50_ms"]
    serving_rows = [
        [name, f"{rps[name]:.2f}", f"{rps[name] / rps['torch-fp32']:.2f}×",
         str(served["worker_rss_mib"][name])]
        for name in rps
    ]  # fmt: skip

    # What the int8 limit allows over a baseline's forward pass, before any serving cost: a served
    # target above it cannot be met on this core by any runtime.
    def ceiling(baseline: str) -> str:
        return f"{limits['int8'] / gops(baseline):.2f}×"

    targets = [
        [f"auto ({auto}) at {CLIENTS} clients ≥ {TARGETS['fp32']:.0f}× torch fp32", f"{fp32_ratio:.2f}×",
         ceiling("torch fp32"), verdict(fp32_ratio >= TARGETS["fp32"])],
        [f"auto ≥ {TARGETS['torch_int8']}× torch int8 (dynamic)", f"{int8_ratio:.2f}×",
         ceiling("torch int8"), verdict(int8_ratio >= TARGETS["torch_int8"])],
        [f"OpenVINO int8 forward ≥ {TARGETS['limit_share']:.0%} of the int8 GEMM limit", f"{share:.0%}",
         "100%", verdict(share >= TARGETS["limit_share"])],
        [f"AnalyzeMeal p50 ≤ {TARGETS['analyze']}× the classifier in process",
         f"{served['analyze_meal_p50_ms']:.0f} / {served['classifier_in_process_p50_ms']:.0f} ms"
         f" = {analyze:.2f}×", "—", verdict(analyze <= TARGETS["analyze"])],
    ]  # fmt: skip
    lines = [
        "bench.runtimes — torch and OpenVINO on a confident ViT-B/16 (random backbone, fitted head)",
        *machine_lines(info),
        "shared machine: other engineers' tests ran meanwhile; compare ratios within this run only",
        f"forward pass {flops / 1e9:.1f} GFLOP; OpenVINO GEMMs, one thread, the best of "
        + ", ".join("x".join(map(str, shape)) for shape in GEMM_SHAPES)
        + f": fp32 {limits['fp32']:.0f} GFLOP/s, int8 {limits['int8']:.0f} GOP/s (this core's int8 limit); "
        f"the OpenVINO int8 forward pass at {share:.0%} of it",
        "",
        table(FORWARD_HEADERS, rows),
        "",
        f"through TorchServe, {CLIENTS} clients (classify + nutrition per request), worker RSS warm:",
        table(["served", "req/s", "vs torch fp32", "worker RSS MiB"], serving_rows),
        "",
        table(["target", "measured", "int8 limit allows", "verdict"], targets),
        "",
        f"auto serves {auto}",
    ]
    return "\n".join(lines), share


def main() -> None:
    from bench.serving import make_photo
    from bench.training import quiet_transformers

    quiet_transformers()
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="foodcal-bench-runtimes-"))
    try:
        progress("building the confident ViT-B/16; make models' conversion, guard and choice (auto)")
        base, identity, store, checkpoints = build(work)
        names = [tuple(key.split("-")) for key in identity["guard"]]
        classifiers = {f"{r} {p}": open_classifier(base, r, p) for r, p in names}
        photo = make_photo()  # a phone photo as the gateway hands it on
        reference = classifiers["torch fp32"]
        pixels = reference.pixels([decode_for_model(photo, reference.input_short_side)])
        flops = forward_flops(reference, pixels)
        progress(f"forward passes, {ROUNDS} rounds interleaved, one thread")
        forward_ms = timed_forward(classifiers, pixels)
        progress("OpenVINO's GEMM limits")
        limits = openvino_gemm_limits(work)
        auto = classifiers[f"{identity['runtime']} {identity['precision']}"]
        classifiers = {}  # the workers need the memory
        served = asyncio.run(serve(store, work, photo, list(checkpoints), auto))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info["load_average_at_end"] = load_average()
    text, share = report(info, identity, forward_ms, flops, limits, served)
    say(text)
    payload = {
        "machine": info, "forward_ms": forward_ms, "gemm_limits": limits, "forward_gflop": flops / 1e9,
        "int8_share_of_limit": share, "guard": identity["guard"], "served_by_auto": identity["version"],
        "serving": served,
    }  # fmt: skip
    json_path, _ = save("runtimes", json.loads(json.dumps(payload, default=float)), text)
    say(f"\nsaved {json_path}")


if __name__ == "__main__":
    main()
