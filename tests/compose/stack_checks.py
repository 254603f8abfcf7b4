"""The compose stack, driven from outside: only through the published gateway port and `docker compose`.

Run by tests/compose/run.sh (`make compose-test`) after `docker compose up --wait`; not collected by
`make test` (the file name is not test_*.py, and it needs the stack). The tests run in file order
and share one stack: photos in, ChatGPT labels from the `openai` service, a training run that
hot-swaps version 1 into TorchServe, a restart of every service with nothing lost, down/up with
the volumes kept, and finally `down -v`.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.compose.stack_helpers import (
    ADDRESS,
    ADMIN_TOKEN,
    COMPOSE,
    GATEWAY,
    GRPCURL,
    PHOTOS,
    STUB_LABEL,
    analyze,
    cli,
    compose,
    grpcurl,
    photo,
    served_in_answers,
    snapshot,
    wait_for,
)

pytestmark = pytest.mark.skipif(not COMPOSE, reason="run by tests/compose/run.sh (make compose-test)")

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


def test_only_the_models_build_image_carries_nncf():
    script = "import importlib.util as u; print(*(u.find_spec(m) is not None for m in ('openvino', 'nncf')))"
    for service in ("torchserve", "gateway"):
        assert compose("exec", "-T", service, "python", "-c", script).split() == ["True", "False"], service
    built = compose("run", "--rm", "--no-deps", "-T", "models", "python", "-c", script)
    assert built.split()[-2:] == ["True", "True"]


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
