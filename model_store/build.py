"""`make models`: build food101.mar and nutrition v0 into the model store; skip when nothing changed."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch

from foodcal.settings import Settings, load_settings
from model_store import archive, checkpoint, precision, reference
from model_store.worker.nutrition_model import NutritionModel

log = logging.getLogger(__name__)
_INPUTS = [
    *sorted(archive.WORKER.glob("*.py")),  # everything a .mar carries
    Path(__file__).with_name("openvino_convert.py"),
    Path(__file__).with_name("sample_photos.py"),
    reference.TABLE_PATH,
    Path(checkpoint.__file__),
    Path(precision.__file__),
    Path(archive.__file__),
]


def food101_config(settings: Settings) -> str:
    """TorchServe model config for the classifier: one single-threaded worker per core (the ViT is
    compute-bound: workers use the cores, threads inside one worker contend)."""
    workers = settings.food101_workers or os.cpu_count() or 1
    return (
        f"minWorkers: {workers}\nmaxWorkers: {workers}\n"
        f"batchSize: {food101_batch_size(settings, workers)}\n"
        f"maxBatchDelay: {settings.food101_max_batch_delay_ms}\n"
        "responseTimeout: 60\n"
    )


def food101_batch_size(settings: Settings, workers: int) -> int:
    """Batching may pay when one worker serves the queue. With several workers on the same
    queue, one worker takes a whole batch while the others idle: measured on 2 cores at 8 clients,
    batch 8 kept 1.0-1.7 cores busy and lost up to half the throughput of batch 1."""
    if settings.food101_batch_size:
        return settings.food101_batch_size
    return 8 if workers == 1 else 1


def _stamp(source: str, config: str) -> str:
    digest = hashlib.sha256(source.encode() + config.encode())
    for path in _INPUTS:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def reference_model(checkpoint_dir: Path) -> NutritionModel:
    """Nutrition version 0, with the table rows in the classifier's label order. The embedding
    width is the one measured on the checkpoint itself (`checkpoint.describe`)."""
    config = json.loads((checkpoint_dir / "config.json").read_text())
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    table = torch.tensor(reference.table_for_labels(labels), dtype=torch.float32)
    identity = checkpoint.read_identity(checkpoint_dir)
    return NutritionModel.from_table(table, embedding_dim=int(identity["embedding_dim"]))


def build_models(settings: Settings, force: bool = False) -> dict:
    """Returns the classifier identity; rebuilds only when an input changed."""
    store = Path(settings.model_store_dir)
    checkpoint_dir = store.parent / "checkpoints" / "food101"
    stamp_file = store / ".build-stamp"
    config = food101_config(settings)
    setting = f"{settings.food101_model}|{settings.food101_precision}|{settings.food101_runtime}"
    stamp = _stamp(setting, config)
    food101_mar, nutrition_mar = store / "food101.mar", store / archive.nutrition_mar_name(0)
    built = [food101_mar, nutrition_mar, checkpoint_dir / "foodcal_classifier.json"]
    up_to_date = stamp_file.exists() and stamp_file.read_text() == stamp and all(p.exists() for p in built)
    if up_to_date and not force:
        log.info("models up to date in %s", store)
        return checkpoint.read_identity(checkpoint_dir)

    # Prepared aside and swapped in only on success: a failed download never breaks a working store.
    incoming = checkpoint_dir.with_name("food101.incoming")
    identity = checkpoint.prepare_checkpoint(
        settings.food101_model, incoming, settings.food101_precision, settings.food101_runtime
    )
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    incoming.rename(checkpoint_dir)
    config_file = checkpoint_dir.parent / "food101-config.yaml"
    config_file.write_text(config)
    archive.build_food101_mar(checkpoint_dir, food101_mar, config_file)
    archive.build_nutrition_mar(
        reference_model(checkpoint_dir), 0, nutrition_mar, classifier_version=identity["version"]
    )
    stamp_file.write_text(stamp)
    guard = identity["guard"][f"{identity['runtime']}-{identity['precision']}"]
    log.info(
        "built %s and %s (classifier %s, %s %s; guard against torch fp32: cosine %.4f, max Δp %.4f, "
        "top-1 %.0f%%, Δkcal %.1f%%)",
        food101_mar.name, nutrition_mar.name, identity["version"], identity["runtime"], identity["precision"],
        guard["embedding_cosine_min"], guard["probability_max_difference"],
        guard["top1_agreement"] * 100, guard["calories_max_relative_difference"] * 100,
    )  # fmt: skip
    return identity


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build_models(load_settings())


if __name__ == "__main__":
    main()
