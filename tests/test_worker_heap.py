"""A TorchServe worker keeps the memory it freed for the next request (model_store/worker_heap.py)."""

import subprocess
import sys
import zipfile

import pytest

from model_store import archive

# One request's activations, as a ViT-B/16 makes them: many blocks of a few MB (above glibc's
# starting mmap threshold of 128 KiB), all alive at the peak, all freed at the end.
REQUESTS = """
import resource, torch
def request():
    blocks = [torch.empty(197 * 768 * 4).fill_(1.0) for _ in range(32)]  # 32 x 2.4 MB, touched
    del blocks
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    request()
before = faults()
for _ in range(5):
    request()
print((faults() - before) // 5)
"""
PAGES_PER_REQUEST = 32 * 197 * 768 * 4 * 4 // 4096  # ~18,900: every page of the request faulted again
# glibc's thresholds as a process starts (128 KiB). Its dynamic ones later depend on the address
# layout: the same worker imports left a process faulting 17,699, 118 and 0 pages per request in
# three runs. A fixed start makes the "without" case repeatable.
GLIBC_START = (
    f"import sys\nsys.path.append({str(archive.WORKER_HEAP_FILE.parent)!r})\nimport worker_heap\n"
    "assert worker_heap.set_thresholds(128 * 1024, 128 * 1024)\n"
)


def faults_per_request(setup: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", setup + REQUESTS], capture_output=True, text=True, check=True
    )
    return int(result.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_worker_keeps_its_heap_and_takes_no_page_faults_on_its_next_request():
    # Without: glibc hands the freed top of its heap back to the kernel after every request.
    assert faults_per_request(GLIBC_START) > PAGES_PER_REQUEST // 2
    kept = faults_per_request(GLIBC_START + "assert worker_heap.keep_freed_memory()\n")
    assert kept < PAGES_PER_REQUEST // 100


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_shipped_food101_worker_keeps_its_heap(model_store, tmp_path):
    with zipfile.ZipFile(model_store / "food101.mar") as mar:
        mar.extractall(tmp_path)
    initialize = GLIBC_START + (
        "from types import SimpleNamespace\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from food101_handler import Food101Handler\n"
        f"context = SimpleNamespace(system_properties={{'model_dir': {str(tmp_path)!r}}})\n"
        "Food101Handler().initialize(context)\n"
    )
    assert faults_per_request(initialize) < PAGES_PER_REQUEST // 100
