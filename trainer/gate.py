"""Deploy only when better: a paired comparison of two versions on the same validation samples.

A score that is lower by chance is not "better". Validation sets are small (20% of as few as 50
samples), so a candidate must win by a margin *and* keep winning when the validation samples are
resampled (a paired bootstrap): noise that happens to look 3% better on 48 samples stays undeployed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model_store.nutrition_model import NUTRIENTS, NutritionModel
from trainer.data import Dataset

MIN_IMPROVEMENT = 0.02  # the candidate's primary score must be at least 2% lower...
MIN_CONFIDENCE = 0.95  # ...and lower than the served one's in 95% of bootstrap resamples
RESAMPLES = 2000
SEED = 1234  # the same data and models always give the same decision
PRIMARY_SCORE = "mean over nutrients of MAE / mean label (lower is better)"
RULE = (
    f"a score at least {MIN_IMPROVEMENT:.0%} lower, "
    f"and lower in {MIN_CONFIDENCE:.0%} of {RESAMPLES} paired bootstrap resamples"
)


@dataclass
class Evaluation:
    mae: tuple[float, float, float, float]
    score: float  # PRIMARY_SCORE
    samples: int

    def as_dict(self) -> dict:
        return {
            "mae": dict(zip(NUTRIENTS, self.mae, strict=True)),
            "score": self.score,
            "samples": self.samples,
        }


@dataclass
class Comparison:
    candidate: Evaluation
    served: Evaluation
    improvement: float  # relative drop of the primary score; > 0 means the candidate is better
    confidence: float  # share of resamples in which the candidate scores lower

    @property
    def better(self) -> bool:
        return self.improvement >= MIN_IMPROVEMENT and self.confidence >= MIN_CONFIDENCE

    def as_dict(self) -> dict:
        return {
            "candidate": self.candidate.as_dict(),
            "served": self.served.as_dict(),
            "primary_score": PRIMARY_SCORE,
            "improvement": self.improvement,
            "confidence": self.confidence,
            "rule": RULE,
        }

    def summary(self) -> str:
        return f"gain {self.improvement:+.1%}, lower in {self.confidence:.0%} of resamples"


def predictions(model: NutritionModel, data: Dataset) -> np.ndarray:
    """[n, 4] predictions of `model` for `data`'s samples."""
    with torch.inference_mode():
        predicted = model.eval()(torch.from_numpy(data.embeddings), torch.from_numpy(data.probabilities))
    return predicted.numpy().astype(np.float64)


def _scale(targets: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(targets).mean(axis=0).astype(np.float64), 1e-6)


def _evaluation(errors: np.ndarray, scale: np.ndarray) -> Evaluation:
    mae = errors.mean(axis=0)
    return Evaluation(tuple(float(v) for v in mae), float((mae / scale).mean()), len(errors))  # type: ignore[arg-type]


def evaluate(model: NutritionModel, data: Dataset) -> Evaluation:
    """MAE per nutrient and the primary score: the mean of per-nutrient MAE / mean label."""
    return _evaluation(np.abs(predictions(model, data) - data.targets), _scale(data.targets))


def compare(candidate: NutritionModel, served: NutritionModel, data: Dataset) -> Comparison:
    return compare_predictions(predictions(candidate, data), predictions(served, data), data.targets)


def compare_predictions(candidate: np.ndarray, served: np.ndarray, targets: np.ndarray) -> Comparison:
    """The paired comparison of two versions' [n, 4] predictions of the same samples' targets:
    offline on a validation split, or live on the labels of photos both versions answered."""
    targets = np.asarray(targets, dtype=np.float64)
    scale = _scale(targets)
    candidate_errors, served_errors = np.abs(candidate - targets), np.abs(served - targets)
    # Per-sample primary score: its mean over samples is exactly the primary score.
    difference = ((served_errors - candidate_errors) / scale).mean(axis=1)
    served_eval = _evaluation(served_errors, scale)
    candidate_eval = _evaluation(candidate_errors, scale)
    confidence = _share_of_resamples_above_zero(difference)
    improvement = 1 - candidate_eval.score / served_eval.score if served_eval.score > 0 else 0.0
    return Comparison(candidate_eval, served_eval, improvement, confidence)


def _share_of_resamples_above_zero(difference: np.ndarray) -> float:
    """Paired bootstrap: the share of resampled means that are > 0 (in chunks: bounded memory)."""
    rng, n = np.random.default_rng(SEED), len(difference)
    per_chunk = max(1, 4_000_000 // n)
    wins = 0
    for start in range(0, RESAMPLES, per_chunk):
        size = min(per_chunk, RESAMPLES - start)
        wins += int((difference[rng.integers(0, n, size=(size, n))].mean(axis=1) > 0).sum())
    return wins / RESAMPLES
