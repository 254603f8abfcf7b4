"""Resolve FOOD101_MODEL into a saved checkpoint directory that the food101 handler loads.

FOOD101_MODEL is a HuggingFace hub id (default `nateraw/food`), a local directory holding a saved
checkpoint, or `demo`: a tiny randomly initialised ViT with the 101 Food-101 labels, built here and
saved with `save_pretrained`, so it takes exactly the path a real checkpoint takes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from model_store.reference import food101_labels, normalise_label

DEMO = "demo"
log = logging.getLogger(__name__)
CHECKPOINT_FILES = ("config.json", "preprocessor_config.json", "model.safetensors", "foodcal_classifier.json")


class CheckpointError(SystemExit):
    """FOOD101_MODEL could not be loaded; the message says what to do."""


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def write_random_vit(out_dir: Path, image_size: int = 224, **shape: int) -> None:
    """A randomly initialised ViT with the 101 Food-101 labels and a matching preprocessor config,
    saved with `save_pretrained` exactly like a real checkpoint. Seeded: the same on every machine.
    The default shape is ViT-B/16 (the real nateraw/food), which the benchmarks use."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    labels = food101_labels()
    config = ViTConfig(
        image_size=image_size,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        **shape,
    )
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(out_dir)
    preprocessing = {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": image_size, "width": image_size},
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessing, indent=2))


def _write_demo(out_dir: Path) -> None:
    write_random_vit(
        out_dir,
        image_size=64,
        patch_size=16,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=96,
    )


def _write_pretrained(source: str, out_dir: Path) -> None:
    from transformers import AutoModelForImageClassification

    try:
        model = AutoModelForImageClassification.from_pretrained(source)
        if Path(source).is_dir():
            preprocessing = Path(source) / "preprocessor_config.json"
        else:
            from huggingface_hub import hf_hub_download

            preprocessing = Path(hf_hub_download(source, "preprocessor_config.json"))
        shutil.copyfile(preprocessing, out_dir / "preprocessor_config.json")
    except Exception as error:
        raise CheckpointError(
            f"FOOD101_MODEL={source!r} could not be loaded ({type(error).__name__}: {error}). "
            "Set FOOD101_MODEL to a HuggingFace hub id (needs network once), a local directory "
            "with a saved checkpoint (config.json, weights, preprocessor_config.json), or "
            "FOOD101_MODEL=demo for a tiny untrained classifier that needs no download."
        ) from None
    model.save_pretrained(out_dir)


def check_labels(source: str, labels: list[str]) -> None:
    """Labels are matched by name, in any order and either spelling ('apple_pie', 'Apple pie')."""
    known = set(food101_labels())
    names = [normalise_label(label) for label in labels]
    missing = sorted(known - set(names))
    unknown = sorted({label for label, name in zip(labels, names, strict=True) if name not in known})
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if missing or unknown or duplicated:
        problems = [
            f"missing Food-101 dishes: {', '.join(missing)}" if missing else "",
            f"labels that are not Food-101 dishes: {', '.join(unknown)}" if unknown else "",
            f"labels given twice: {', '.join(duplicated)}" if duplicated else "",
        ]
        raise CheckpointError(
            f"FOOD101_MODEL={source!r} is not a Food-101 classifier ({len(labels)} labels; "
            + "; ".join(p for p in problems if p)
            + ")"
        )


def describe(source: str, checkpoint_dir: Path) -> dict:
    """Load the saved checkpoint the way the handler will, and measure what the rest needs."""
    from model_store.worker.food101_model import Food101Classifier, NotAClassifier

    try:
        classifier = Food101Classifier(checkpoint_dir)
    except NotAClassifier as error:
        raise CheckpointError(f"FOOD101_MODEL={source!r}: {error}") from None
    check_labels(source, classifier.labels)
    from PIL import Image

    probe = Image.new("RGB", (97, 61), (120, 90, 60))  # any size: the processor resizes it
    embedding, probabilities = classifier(
        classifier.processor(images=[probe], return_tensors="pt")["pixel_values"]
    )
    if embedding.shape[-1] != classifier.embedding_dim or probabilities.shape[-1] != 101:
        raise CheckpointError(f"FOOD101_MODEL={source!r}: unexpected output shapes")
    return {"embedding_dim": classifier.embedding_dim, "family": classifier.model.config.model_type}


def _convert(source: str, out_dir: Path, runtime: str) -> tuple[str, ...]:
    """The runtimes the guard may pick from: OpenVINO's where its conversion worked, else torch
    alone with one log line saying why."""
    if runtime == "torch":
        return ("torch",)
    from model_store.openvino_convert import ConversionFailed, convert

    try:
        convert(out_dir)
    except ConversionFailed as error:
        log.warning(
            "FOOD101_RUNTIME=%s: %s not converted to OpenVINO, torch serves it: %s", runtime, source, error
        )
        return ("torch",)
    return ("torch", "openvino")


def prepare_checkpoint(source: str, out_dir: Path, precision: str = "auto", runtime: str = "torch") -> dict:
    """Save the classifier named by `source` into `out_dir`; returns its identity. `precision` is
    FOOD101_PRECISION and `runtime` FOOD101_RUNTIME: what is served is decided here, by speed and
    the accuracy guard against torch fp32."""
    from model_store import precision as precisions

    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    if source == DEMO:
        _write_demo(out_dir)
    else:
        _write_pretrained(source, out_dir)
    described = describe(source, out_dir)
    runtimes = _convert(source, out_dir, runtime)
    guard = precisions.measure(out_dir, precisions.guard_photos(), runtimes)
    served = precisions.choose_served(runtime, precision, guard)
    version = f"{source}@{_fingerprint(out_dir / 'model.safetensors')}"
    if served.runtime != "torch":
        version = f"{version}:{served.runtime}-{served.precision}"
    elif served.precision != "fp32":
        version = f"{version}:{served.precision}"
    identity = {
        "name": source,
        "demo": source == DEMO,
        # Embeddings of another arithmetic are other features: a change asks for `make backfill`.
        "version": version,
        "runtime": served.runtime,
        "precision": served.precision,
        "precision_setting": precision,
        "runtime_setting": runtime,
        "guard": {f"{r.runtime}-{r.precision}": r.as_dict() for rs in guard.values() for r in rs.values()},
        **described,
    }
    (out_dir / "foodcal_classifier.json").write_text(json.dumps(identity))
    return identity


def served_files(checkpoint_dir: Path) -> list[Path]:
    """What the worker loads: the torch weights, or only the chosen OpenVINO IR (one copy in RAM)."""
    identity = read_identity(checkpoint_dir)
    files = [Path(checkpoint_dir) / name for name in CHECKPOINT_FILES]
    if identity.get("runtime", "torch") == "torch":
        return files
    from model_store.worker.openvino_model import ir_path

    xml = ir_path(checkpoint_dir, identity["precision"])
    return [f for f in files if f.name != "model.safetensors"] + [xml, xml.with_suffix(".bin")]


def read_identity(checkpoint_dir: Path) -> dict:
    return json.loads((Path(checkpoint_dir) / "foodcal_classifier.json").read_text())
