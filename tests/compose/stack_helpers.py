"""What tests/compose/stack_checks.py drives the compose stack with: `docker compose`, the real
grpcurl and CLI against the published gateway port, photos, and waiting with a bound."""

from __future__ import annotations

import base64
import io
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = shlex.split(os.environ.get("FOODCAL_COMPOSE", ""))
ADDRESS = f"127.0.0.1:{os.environ.get('FOODCAL_TEST_PORT', '0')}"
TOKEN = "compose-test-token"  # API_TOKENS in docker-compose.test.yml
ADMIN_TOKEN = "compose-test-admin"  # ADMIN_TOKENS: training runs and model versions
ADMIN_METHODS = ("StartTrainingRun", "WatchTrainingRun", "ListModelVersions", "RollbackModel")
GRPCURL = str(ROOT / ".venv" / "bin" / "grpcurl")
GATEWAY = "foodcal.v1.GatewayService"
PHOTOS = 14  # MIN_TRAINING_SAMPLES is 12 in docker-compose.test.yml
STUB_LABEL = {"dish": "margherita pizza", "calories_kcal": 650.0}  # tests/openai_stub.GOOD_ANSWER


# -- helpers ---------------------------------------------------------------------------------------


def compose(*args: str, timeout: float = 900) -> str:
    done = subprocess.run([*COMPOSE, *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"docker compose {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def photo(index: int) -> bytes:
    """A JPEG with its own sha256 for each index, with some structure."""
    color = (index * 37 % 256, index * 91 % 256, 200 - index % 100)
    image = Image.new("RGB", (320, 240), color)
    for x in range(0, 320, 16):
        image.paste((color[1], color[2], color[0]), (x, 0, x + 4 + index % 8, 240))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def grpcurl(method: str, request: dict | None = None, *, auth: bool = True, retry_s: float = 0) -> dict:
    """One call with the real grpcurl; retried on UNAVAILABLE for up to retry_s (after a restart)."""
    argv = [GRPCURL, "-plaintext", "-max-time", "120", "-emit-defaults"]
    if auth:
        token = ADMIN_TOKEN if method.endswith(ADMIN_METHODS) else TOKEN
        argv += ["-H", f"authorization: Bearer {token}"]
    argv += ["-d", "@", ADDRESS, method]
    deadline = time.monotonic() + retry_s
    while True:
        done = subprocess.run(
            argv, input=json.dumps(request or {}), capture_output=True, text=True, timeout=150
        )
        if done.returncode == 0:
            return json.loads(done.stdout) if done.stdout.strip() else {}
        if time.monotonic() > deadline or "Unavailable" not in done.stderr:
            raise AssertionError(f"grpcurl {method}: {done.stderr.strip()}")
        time.sleep(1)


def cli(*args: str, token: str = TOKEN) -> subprocess.CompletedProcess:
    env = {**os.environ, "FOODCAL_TOKEN": token, "FOODCAL_ADDRESS": ADDRESS}
    return subprocess.run(
        [sys.executable, "-m", "foodcal.cli.main", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def analyze(index: int) -> dict:
    request = {"image": base64.b64encode(photo(index)).decode(), "filename": f"photo-{index}.jpg"}
    return grpcurl(f"{GATEWAY}/AnalyzeMeal", request, retry_s=60)


def wait_for(condition, timeout_s: float, what: str, interval_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(interval_s)


def snapshot() -> dict:
    """Everything a restart must not lose: samples, labels, versions, the served version."""

    def served_known():  # right after a restart the gateway may not have reached TorchServe yet
        stats = grpcurl(f"{GATEWAY}/GetStats", retry_s=90)
        return stats if "nutrition" in stats["served"] else None

    stats = wait_for(served_known, 60, "GetStats knows the served nutrition version", 1)
    samples = grpcurl(f"{GATEWAY}/ListSamples", {"page_size": 100}, retry_s=90)["samples"]
    versions = grpcurl(f"{GATEWAY}/ListModelVersions", retry_s=90)
    return {
        "total_samples": stats["total_samples"],
        "training_data_samples": stats["training_data_samples"],
        "served": stats["served"]["nutrition"],
        "samples": sorted(
            (
                s["sample_id"],
                s["image_sha256"],
                s["label_status"],
                json.dumps(s.get("chatgpt_label"), sort_keys=True),
            )
            for s in samples
        ),
        "versions": sorted(v["version"] for v in versions["versions"]),
        "served_version": versions["served_version"],
    }


def served_in_answers(expected: int, index: int) -> dict:
    """A new photo is answered by nutrition `expected` (TorchServe serves it again after a restart)."""
    answers = []

    def answered_by_expected():
        answers.append(analyze(index + len(answers)))
        return answers[-1] if answers[-1]["model_versions"]["nutrition"] == expected else None

    return wait_for(answered_by_expected, 120, f"an AnalyzeMeal answered by nutrition v{expected}", 2)
