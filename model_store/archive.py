"""Build TorchServe archives with torch-model-archiver."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from model_store.checkpoint import served_files
from model_store.worker.nutrition_model import NutritionModel

# Everything TorchServe's worker runs is the package model_store/worker/; each .mar carries it whole
# under the same name, so a handler imports `model_store.worker.*` in the repository and in the
# archive alike, and an archive keeps the code it was built with.
WORKER = Path(__file__).with_name("worker")
FOOD101 = "food101"
NUTRITION = "nutrition"


def nutrition_mar_name(version: int) -> str:
    return f"{NUTRITION}-v{version}.mar"


def _archiver() -> str:
    return str(Path(sys.executable).with_name("torch-model-archiver"))


def _archive(
    name: str, version: str, handler: Path, extra_files: list[Path], out_path: Path, config: Path | None
):
    """Run the archiver into a temp dir, then move the .mar into place atomically."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        command = [
            _archiver(),
            "--model-name", name,
            "--version", version,
            "--handler", str(handler),
            "--extra-files", ",".join(str(p) for p in extra_files),
            "--export-path", tmp,
            "--archive-format", "zip-store",  # weights barely compress; skipping deflate is faster
        ]  # fmt: skip
        if config is not None:
            command += ["--config-file", str(config)]
        # The archiver stages files in $TMPDIR/<model name>: a private TMPDIR keeps two builds of
        # the same model name (tests, benchmarks, the trainer) from mixing each other's files.
        staging = Path(tmp) / "staging"
        staging.mkdir()
        result = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "TMPDIR": str(staging)}
        )
        if result.returncode != 0:
            raise RuntimeError(f"torch-model-archiver failed for {name}: {result.stderr.strip()[-500:]}")
        os.replace(Path(tmp) / f"{name}.mar", out_path)
    return out_path


def _worker_package(into: Path) -> Path:
    """A folder holding model_store/__init__.py and model_store/worker/ (sources only): the archiver
    copies a folder's contents into the archive's root."""
    root = into / "worker_package"
    package = root / "model_store"
    shutil.copytree(WORKER, package / "worker", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (package / "__init__.py").write_text('"""model_store as a .mar carries it: the worker package only."""\n')
    return root


def build_food101_mar(checkpoint_dir: Path, out_path: Path, config: Path | None = None) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        files = [*served_files(Path(checkpoint_dir)), _worker_package(Path(tmp))]
        return _archive(FOOD101, "1", WORKER / "food101_handler.py", files, out_path, config)


def build_nutrition_mar(model: NutritionModel, version: int, out_path: Path, **metadata: object) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "nutrition.pth"
        torch.save(model.checkpoint(version=version, **metadata), weights)
        return _archive(
            NUTRITION,
            str(version),
            WORKER / "nutrition_handler.py",
            [_worker_package(Path(tmp)), weights],
            out_path,
            None,
        )
