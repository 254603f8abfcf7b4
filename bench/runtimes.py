"""`python -m bench.runtimes`: torch and OpenVINO, fp32 and int8, on a classifier sure of itself.

The subject is the ViT-B/16 shape with random weights and a head fitted to be confident
(`model_store.confident`: top-1 typically > 0.8 on the guard photos, as a fine-tuned Food-101 model),
converted as `make models` converts it (`model_store.openvino_convert`). In one run, interleaved
round by round so a noisy machine slows every candidate alike, one thread as a worker runs:

1. the accuracy guard's numbers against torch fp32, and what `auto` serves;
2. the forward pass (one preprocessed photo) of each runtime x precision, as ratios to torch fp32
   and to today's torch int8 (dynamic quantisation);
3. this core's int8 limit in the same runtime: one large int8 GEMM through OpenVINO (a Linear
   quantised by NNCF, as the classifier's), and the int8 forward pass's share of it;
4. each runtime's RSS after loading and one call, in a fresh process (as a worker holds it).

Served throughput through TorchServe is `bench.precision`'s; ratios only, never a timed assertion.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.harness import load_average, machine, machine_lines, progress, save, say, table
from model_store import precision as guard
from model_store.checkpoint import write_random_vit
from model_store.confident import make_confident
from model_store.openvino_convert import convert
from model_store.sample_photos import photo_like
from model_store.worker.classifier import open_classifier
from model_store.worker.photos import decode_for_model

ROUNDS, GEMM = 10, 1024


def forward_flops(classifier, pixels: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        classifier(pixels)
    return float(counter.get_total_flops())


def openvino_gemm_limits(work: Path, size: int = GEMM, repeat: int = 5) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) of one size x size x size GEMM on OpenVINO, one thread: fp32, and
    int8 with the Linear quantised by NNCF exactly as the classifier's Linears are."""
    import nncf
    import openvino as ov

    from model_store.worker.openvino_model import compile_ir

    linear = torch.nn.Linear(size, size, bias=False).eval()
    x = torch.randn(size, size)
    model = ov.convert_model(linear, example_input=x)
    calibration = nncf.Dataset([torch.randn(size, size).numpy() for _ in range(2)])
    models = {"fp32": model, "int8": nncf.quantize(model, calibration, subset_size=2)}
    limits = {}
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
        limits[name] = 2 * size**3 / statistics.median(seconds) / 1e9
    return limits


def rss_mib(checkpoint: Path, runtime: str, precision: str) -> float:
    """Peak RSS of a fresh process that loads the classifier and answers one photo."""
    code = (
        "import resource, sys; from model_store.worker.classifier import open_classifier; "
        "from model_store.sample_photos import photo_like; "
        "from model_store.worker.photos import decode_for_model; "
        f"c = open_classifier({str(checkpoint)!r}, {runtime!r}, {precision!r}); "
        "c(c.pixels([decode_for_model(photo_like(1)[0], c.input_short_side)])); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    env = {"FOODCAL_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return int(out.stdout.split()[-1]) / 1024


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


def main() -> None:
    from bench.training import quiet_transformers

    quiet_transformers()
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="foodcal-bench-runtimes-"))
    try:
        checkpoint = work / "vit-b"
        progress("building the confident ViT-B/16 and converting it to OpenVINO (fp32, NNCF int8)")
        write_random_vit(checkpoint)
        make_confident(checkpoint)
        convert(checkpoint)
        progress("the accuracy guard on every runtime x precision")
        results = guard.measure(checkpoint, guard.guard_photos(), ("torch", "openvino"))
        served = guard.choose_served("auto", "auto", results)
        names = [(r, p) for r in results for p in results[r]]
        classifiers = {f"{r} {p}": open_classifier(checkpoint, r, p) for r, p in names}
        reference = classifiers["torch fp32"]
        photo = photo_like(1, seed=7)[0]
        pixels = reference.pixels([decode_for_model(photo, reference.input_short_side)])
        flops = forward_flops(reference, pixels)
        progress(f"forward passes, {ROUNDS} rounds interleaved, one thread")
        forward_ms = timed_forward(classifiers, pixels)
        progress("OpenVINO's GEMM limits, and each runtime's RSS in a fresh process")
        limits = openvino_gemm_limits(work)
        rss = {f"{r} {p}": rss_mib(checkpoint, r, p) for r, p in names}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info["load_average_at_end"] = load_average()
    rows = []
    for runtime, precision in names:
        name, result = f"{runtime} {precision}", results[runtime][precision]
        ms = forward_ms[name]
        rows.append([
            name + (" (auto)" if (runtime, precision) == (served.runtime, served.precision) else ""),
            f"{ms:.0f}", f"{forward_ms['torch fp32'] / ms:.2f}×",
            f"{forward_ms.get('torch int8', float('nan')) / ms:.2f}×",
            f"{flops / (ms / 1000) / 1e9:.0f}", f"{rss[name]:.0f}",
            f"{result.embedding_cosine_min:.4f}", f"{result.probability_max_difference:.4f}",
            f"{result.top1_agreement:.0%}", f"{result.calories_max_relative_difference:.2%}",
            "pass" if not result.failures else "FAIL",
        ])  # fmt: skip
    int8_ms = forward_ms.get("openvino int8")
    share = flops / (int8_ms / 1000) / 1e9 / limits["int8"] if int8_ms else float("nan")
    lines = [
        "bench.runtimes — torch and OpenVINO on a confident ViT-B/16 (random backbone, fitted head)",
        *machine_lines(info),
        "shared machine: other engineers' tests ran meanwhile; compare ratios within this run only",
        f"forward pass {flops / 1e9:.1f} GFLOP; OpenVINO {GEMM}³ GEMM, one thread: fp32 "
        f"{limits['fp32']:.0f} GFLOP/s, int8 {limits['int8']:.0f} GOP/s (this core's int8 limit); "
        f"the OpenVINO int8 forward pass at {share:.0%} of it",
        "",
        table(
            [
                "runtime precision",
                "forward ms",
                "vs torch fp32",
                "vs torch int8",
                "GOP/s",
                "RSS MiB",
                "emb. cosine",
                "max Δp",
                "top-1",
                "max Δkcal",
                "guard",
            ],
            rows,
        ),
        "",
        f"auto serves {served.runtime} {served.precision}",
    ]
    text = "\n".join(lines)
    say(text)
    payload = {
        "machine": info, "forward_ms": forward_ms, "rss_mib": rss, "gemm_limits": limits,
        "forward_gflop": flops / 1e9, "int8_share_of_limit": share,
        "guard": {f"{r}-{p}": results[r][p].as_dict() for r, p in names},
        "served": [served.runtime, served.precision],
    }  # fmt: skip
    json_path, _ = save("runtimes", json.loads(json.dumps(payload, default=float)), text)
    say(f"\nsaved {json_path}")


if __name__ == "__main__":
    main()
