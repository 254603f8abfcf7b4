"""The compose stack, driven from outside: only through the published gateway port and `docker compose`.

Run by tests/compose/run.sh (`make compose-test`) after `docker compose up --wait`; not collected by
`make test` (the file name is not test_*.py, and it needs the stack). The tests run in file order
and share one stack: photos in, ChatGPT labels from the `openai` service, a training run that
hot-swaps version 1 into TorchServe, a restart of every service with nothing lost, down/up with
the volumes kept, and finally `down -v`.
"""

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

import pytest
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

pytestmark = pytest.mark.skipif(not COMPOSE, reason="run by tests/compose/run.sh (make compose-test)")


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
        [sys.executable, "-m", "foodcal.client", *args],
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
    stats = grpcurl(f"{GATEWAY}/GetStats", retry_s=90)
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


STATE: dict = {}


# -- the image -----------------------------------------------------------------------------------


def test_the_image_runs_as_a_non_root_user_with_cpu_only_torch():
    script = (
        "import os, importlib.metadata as m, torch; "
        "names = sorted(d.metadata['Name'].lower() for d in m.distributions()); "
        "print(os.getuid(), torch.__version__, torch.cuda.is_available(), "
        "[n for n in names if n.startswith(('nvidia', 'torchvision', 'triton'))])"
    )
    uid, version, cuda, gpu_packages = compose("exec", "-T", "gateway", "python", "-c", script).split(" ", 3)
    assert uid != "0"
    assert version == "2.13.0+cpu" and cuda == "False"
    assert gpu_packages.strip() == "[]"
    for service in ("torchserve", "labeler", "trainer"):
        assert compose("exec", "-T", service, "id", "-u").strip() == uid, service


def test_only_the_gateway_is_published():
    published = {}
    for line in compose("ps", "--format", "json").splitlines():
        container = json.loads(line)
        published[container["Service"]] = {
            p["PublishedPort"] for p in container["Publishers"] if p["PublishedPort"]
        }
    assert published.pop("gateway") == {int(ADDRESS.rsplit(":", 1)[1])}
    assert not any(published.values()), published


# -- driving it from outside -----------------------------------------------------------------------


def test_grpcurl_reaches_health_and_reflection_without_a_token():
    assert grpcurl("grpc.health.v1.Health/Check", auth=False)["status"] == "SERVING"
    listed = subprocess.run(
        [GRPCURL, "-plaintext", ADDRESS, "list"], capture_output=True, text=True, timeout=30
    )
    assert GATEWAY in listed.stdout.split(), listed.stderr


def test_analyze_meal_through_grpcurl_and_the_cli(tmp_path):
    for index in range(PHOTOS - 2):
        answer = analyze(index)
        assert answer["sample_id"] and answer["dishes"], answer
        assert answer["model_versions"]["classifier_is_demo"] is True
        assert answer["model_versions"]["nutrition"] == 0
    for index in range(PHOTOS - 2, PHOTOS):
        path = tmp_path / f"photo-{index}.jpg"
        path.write_bytes(photo(index))
        done = cli("--json", "analyze", str(path))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["sample_id"]
    done = cli("--json", "stats")
    assert done.returncode == 0, done.stderr
    assert int(json.loads(done.stdout)["total_samples"]) == PHOTOS


def test_chatgpt_labels_come_from_the_openai_service():
    def all_labelled():
        stats = grpcurl(f"{GATEWAY}/GetStats")
        return stats if int(stats["training_data_samples"]) == PHOTOS else None

    stats = wait_for(all_labelled, 180, f"{PHOTOS} samples with a ChatGPT label")
    assert int(stats["pending_labels"]) == 0  # the label below is the stub's answer
    sample = grpcurl(f"{GATEWAY}/ListSamples", {"page_size": 1})["samples"][0]
    assert sample["label_status"] == "LABEL_STATUS_LABELED"
    label = sample["chatgpt_label"]
    assert label["dish"] == STUB_LABEL["dish"]
    assert label["nutrition"]["calories_kcal"] == pytest.approx(STUB_LABEL["calories_kcal"])


def test_a_training_run_deploys_and_hot_swaps_into_torchserve():
    done = cli("train", "--epochs", "40", token=ADMIN_TOKEN)
    assert done.returncode == 0 and "TRAINING_RUN_STATUS_DEPLOYED" in done.stdout, done.stdout + done.stderr
    versions = json.loads(cli("--json", "versions", token=ADMIN_TOKEN).stdout)
    assert versions["served_version"] == 1
    answer = served_in_answers(1, index=100)
    assert answer["source"] != "NUTRITION_SOURCE_UNSPECIFIED"
    STATE["next_photo"] = 200


# -- restarts, down/up, down -v ---------------------------------------------------------------------


@pytest.mark.parametrize("service", ["postgres", "torchserve", "labeler", "trainer", "gateway"])
def test_a_restart_loses_nothing(service):
    before = snapshot()
    assert before["served_version"] == 1
    started = time.monotonic()
    compose("restart", service)
    compose("up", "-d", "--wait", "--wait-timeout", "600")  # healthy again (nothing is recreated)
    after = snapshot()
    assert after == before
    index = STATE["next_photo"]
    STATE["next_photo"] += 100
    answer = served_in_answers(1, index)  # TorchServe serves v1 again, the gateway answers
    sample_id = answer["sample_id"]

    def labelled():
        sample = grpcurl(f"{GATEWAY}/GetSample", {"sample_id": sample_id})["sample"]
        return sample["label_status"] == "LABEL_STATUS_LABELED"

    wait_for(labelled, 120, f"a ChatGPT label for a photo sent after restarting {service}")
    print(f"restart {service}: answering v1 again after {time.monotonic() - started:.1f} s")


def test_down_and_up_keep_the_volumes():
    before = snapshot()
    compose("down")
    compose("up", "-d", "--wait", "--wait-timeout", "900")
    assert snapshot() == before
    served_in_answers(1, STATE["next_photo"])


def test_down_v_removes_the_containers_and_volumes():
    project = COMPOSE[COMPOSE.index("-p") + 1]
    compose("down", "-v")
    label = f"label=com.docker.compose.project={project}"
    left = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", label], capture_output=True, text=True, check=True
    ).stdout.split()
    containers = subprocess.run(
        ["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not left and not containers, (left, containers)
