"""Shared by the benchmarks: the machine, statistics, tables, results files and a real TorchServe."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("results")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": load_average(),
    }


def machine_lines(info: dict) -> list[str]:
    return [
        f"machine: {info['cpu_count']} CPUs, {info['cpu_model']}; python {info['python']}, "
        f"torch {info['torch']}, torch threads {info['torch_threads']}",
        f"load average (1/5/15 min) at start {info['load_average_at_start']}, "
        f"at end {info.get('load_average_at_end', load_average())} "
        "(other processes on this machine add noise to every number)",
    ]


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary_ms(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": statistics.median(ms),
        "p95_ms": percentile(ms, 95),
        "mean_ms": statistics.fmean(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
    }


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|-" + "-|-".join("-" * w for w in widths) + "-|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def save(name: str, payload: dict, report: str) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / f"{name}.json"
    json_path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    (RESULTS / f"{name}.txt").write_text(report + "\n")
    return json_path, RESULTS / f"{name}.png"


def start_torchserve(model_store: Path, run_dir: Path, models: dict[str, str] | None = None):
    """A real TorchServe on free loopback ports (as tests/conftest.py starts it), and its client."""
    from model_store.server import start_on_free_ports
    from model_store.torchserve_client import TorchServeClient

    process = start_on_free_ports(model_store, run_dir, models)
    config = process.config
    client = TorchServeClient([config.inference_address], [config.management_address], timeout_s=120.0)
    return process, client


def say(text: str = "") -> None:
    print(text, flush=True)


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


# /proc/PID/stat's fields after "(comm)": state ppid pgrp session tty_nr tpgid flags minflt cminflt
# majflt cmajflt utime stime ...
STAT_PGRP, STAT_MINFLT, STAT_UTIME, STAT_STIME = 2, 7, 11, 12


def stat_fields(pid: int | str) -> list[str]:
    """/proc/PID/stat after "(comm)" (a name may hold spaces and parentheses); OSError once gone."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in a process group (TorchServe: java + workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = stat_fields(entry.name)
        except OSError:
            continue
        if int(fields[STAT_PGRP]) == pgid:
            total += int(fields[STAT_UTIME]) + int(fields[STAT_STIME])
    return total / ticks
