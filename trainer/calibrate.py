"""Calibrate a version's ranges on held-out labelled samples (foodcal/domain/calibration.py does the math)."""

from __future__ import annotations

import numpy as np
import torch
from sqlmodel import col, select

from foodcal.domain import calibration
from foodcal.domain.calibration import EXPLORATION_REASON, label_weight
from foodcal.store import Database, Sample
from model_store.worker.nutrition_model import NutritionModel
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


def calibrate_both(db: Database, models: tuple, splits: tuple, level: float, exploration: float) -> tuple:
    """A run's (candidate, served) calibrations on its validation split (the last of `splits`).

    Grouped by the labels each dish has now, as the label policy counts them when it decides: then
    the policy's choice depends only on the group, and each group stays calibrated."""
    labels, validation = label_counts(*splits), splits[-1]
    weights = _label_weights(db, validation.ids, exploration)
    return tuple(calibrate(model, validation, labels, level, weights) for model in models)


def _label_weights(db: Database, sample_ids: list[str], exploration: float) -> np.ndarray:
    """1 / each sample's chance of having been labelled under the label policy: only photos
    labelled by chance (exploration) weigh more, so only those are read."""
    chance = col(Sample.label_policy_reason).startswith(EXPLORATION_REASON)
    with db.session() as session:
        reasons = dict(session.exec(select(Sample.id, Sample.label_policy_reason).where(chance)).all())
    return np.array([label_weight(reasons.get(i, ""), exploration) for i in sample_ids])
