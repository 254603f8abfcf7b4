"""`python -m bench.profile_gateway`: where the time of AnalyzeMeal goes, sampled with py-spy.

Not part of `make bench`: py-spy is a profiling tool, installed by hand (`.venv/bin/pip install
py-spy`), never a requirement. Same set-up as bench.serving (ViT-B/16-sized classifier, real
TorchServe, in-process gateway with USE_CHATGPT=false); py-spy samples, at the same time, this
process (client + gateway, every thread) and each TorchServe worker:

A. sequential AnalyzeMeal requests;
B. 8 concurrent TorchServe-direct clients with food101 batching on (batch 8).

Prints the top functions by samples (self and inclusive) per process; saves the collapsed stacks
under bench/results/profile/ (open them with speedscope or flamegraph.pl).
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import RESULTS, machine, machine_lines, progress, say, start_torchserve, table
from bench.serving import (
    API_TOKEN,
    BATCHED,
    build_store,
    classify_with,
    make_photo,
    register_batched,
    start_gateway,
    throughput,
    unique,
)

PY_SPY = str(Path(sys.executable).with_name("py-spy"))
OUT = RESULTS / "profile"
SEQUENTIAL_REQUESTS = 30
RATE_HZ = 200


def workers(pgid: int) -> dict[int, str]:
    """TorchServe's Python workers in its process group, named by what they hold (by RSS)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            rss = int((entry / "statm").read_text().split()[1])
        except (OSError, ValueError):
            continue
        if "model_service_worker" in cmdline:
            found[int(entry.name)] = rss
    page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
    ordered = sorted(found, key=found.get, reverse=True)
    # A ViT-B worker holds ~350 MB of weights; the nutrition worker far less.
    return {pid: f"{'vit' if found[pid] * page_mb > 300 else 'nutrition'}_worker_{pid}" for pid in ordered}


def record(pids: dict[int, str], seconds: float, tag: str) -> list[tuple[subprocess.Popen, Path, str]]:
    OUT.mkdir(parents=True, exist_ok=True)
    started = []
    for pid, name in pids.items():
        path = OUT / f"{tag}-{name}.txt"
        command = [PY_SPY, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                   "--rate", str(RATE_HZ), "--format", "raw", "--threads", "--nonblocking",
                   "--output", str(path)]  # fmt: skip
        started.append(
            (subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), path, name)
        )
    time.sleep(1.0)  # let py-spy attach
    return started


def finish(started) -> None:
    for proc, _, name in started:
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            progress(f"py-spy for {name} exited {proc.returncode}: {err.decode()[-300:]}")


def frame_name(frame: str) -> str:
    # py-spy raw frames look like "analyze (gateway/analyze.py:52)"; keep function and file.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    parts = Path(file).parts
    for anchor in ("site-packages", "main", "handlers"):
        if anchor in parts:
            file = "/".join(parts[parts.index(anchor) + 1 :])
    return f"{name} ({file})"


def summarise(path: Path, top: int = 12) -> tuple[int, list[list[str]], list[list[str]]]:
    self_counts: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    if not path.exists():
        return 0, [], []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [frame_name(f) for f in stack.split(";") if not f.startswith("thread ")]
        frames = [f for f in frames if f.strip()]
        if not frames:
            continue
        total += n
        self_counts[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    self_rows = [[f"{c / total:.0%}", name] for name, c in self_counts.most_common(top)]
    incl_rows = [[f"{c / total:.0%}", name] for name, c in inclusive.most_common(top * 2)]
    return total, self_rows, incl_rows


async def run(work: Path) -> list[tuple[str, Path]]:
    from foodcal.v1 import gateway_pb2
    from model_store.server import wait_until_ready

    photo = make_photo()
    progress("building models and starting TorchServe")
    _, store, _ = build_store(work)
    process, client = start_torchserve(store, work / "torchserve")
    saved = []
    try:
        await wait_until_ready(client, process, timeout_s=300)
        _, db, server, channel, gateway = await start_gateway(work, store, process.config)
        metadata = (("authorization", f"Bearer {API_TOKEN}"),)

        async def analyze(index: int) -> None:
            request = gateway_pb2.AnalyzeMealRequest(image=unique(photo, index), filename="meal.jpg")
            await gateway.AnalyzeMeal(request, metadata=metadata, timeout=120)

        for index in range(3):
            await analyze(-1 - index)  # warm-up
        pids = {os.getpid(): "bench_gateway", **workers(process.process.pid)}
        seconds = SEQUENTIAL_REQUESTS * 0.6
        progress(f"A. py-spy on {sorted(pids.values())} during sequential AnalyzeMeal (~{seconds:.0f} s)")
        started = record(pids, seconds, "A-analyze")
        start, done = time.perf_counter(), 0
        while time.perf_counter() - start < seconds - 1.5:
            await analyze(done)
            done += 1
        finish(started)
        saved += [(f"A. AnalyzeMeal sequential ({done} requests): {name}", path) for _, path, name in started]
        await channel.close()
        await server.stop(0)
        db.dispose()

        async def direct() -> None:
            classified = await classify_with(client, BATCHED, photo)
            await client.predict_nutrition(classified.embedding, classified.probabilities)

        await register_batched(client)
        await asyncio.gather(*(direct() for _ in range(8)))
        pids = {os.getpid(): "bench_client", **workers(process.process.pid)}
        progress("B. py-spy during 8 concurrent TorchServe-direct clients, batching on (~12 s)")
        started = record(pids, 12, "B-batched")
        result = await throughput(direct, 8, 10.5)
        finish(started)
        saved += [
            (f"B. batched, 8 clients ({result['requests']} requests, "
             f"{result['requests_per_s']:.2f} req/s): {name}", path)
            for _, path, name in started
        ]  # fmt: skip
    finally:
        await client.close()
        process.stop()
    return saved


def main() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if not Path(PY_SPY).exists():
        raise SystemExit(f"py-spy is not installed: {sys.executable} -m pip install py-spy (profiling only)")
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="foodcal-bench-profile-"))
    try:
        saved = asyncio.run(run(work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "bench.profile_gateway — py-spy samples (share of samples of each process)",
        *machine_lines(info),
    ]
    for title, path in saved:
        total, self_rows, incl_rows = summarise(path)
        lines += ["", f"{title} — {total} non-idle samples at {RATE_HZ} Hz, {path.name}"]
        if total:
            lines += [
                table(["self", "function (file)"], self_rows),
                table(["inclusive", "function (file)"], incl_rows),
            ]
    text = "\n".join(lines)
    say(text)
    (OUT / "summary.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
