"""The classifier in the runtime chosen at build time (FOOD101_RUNTIME): torch or OpenVINO."""

from __future__ import annotations

from pathlib import Path

from model_store.worker.food101_model import Food101Classifier


def open_classifier(model_dir: str | Path, runtime: str = "torch", precision: str = "fp32"):
    """The classifier in the runtime chosen at build time."""
    if runtime == "torch":
        return Food101Classifier(model_dir, precision)
    from model_store.worker.openvino_model import OpenVinoClassifier  # openvino loads only when chosen

    return OpenVinoClassifier(model_dir, precision)
