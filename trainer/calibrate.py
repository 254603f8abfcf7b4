"""Calibrate a version's ranges on held-out labelled samples (foodcal/calibration.py does the math)."""

from __future__ import annotations

import numpy as np
import torch

from foodcal import calibration
from model_store.nutrition_model import NutritionModel
from trainer.data import Dataset


def label_counts(*parts: Dataset, classes: int = 101) -> np.ndarray:
    """Training labels per dish (by the classifier's top-1), for the ranges' label groups."""
    counts = np.zeros(classes, dtype=np.int64)
    for part in parts:
        if len(part):
            counts += np.bincount(part.probabilities.argmax(axis=1), minlength=classes)[:classes]
    return counts


def calibrate(
    model: NutritionModel,
    held_out: Dataset,
    counts: np.ndarray,
    level: float,
    weights: np.ndarray | None = None,
) -> calibration.Calibration:
    with torch.inference_mode():
        predictions = model.eval()(
            torch.from_numpy(held_out.embeddings), torch.from_numpy(held_out.probabilities)
        )
    return calibration.fit(
        predictions.numpy(), held_out.targets, held_out.probabilities, counts, level, weights
    )
