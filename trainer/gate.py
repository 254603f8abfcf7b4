"""Deploy only when better: a paired comparison of two versions on the same held-out samples.

A score that is lower by chance is not "better". Validation sets are small (20% of as few as 50
samples), so a candidate must win by a margin *and* keep winning when the validation samples are
resampled (a paired bootstrap): noise that happens to look 3% better on 48 samples stays undeployed.

The truth comes first (`decide`): with at least MIN_TRUTH_PHOTOS held-out corrected photos, the
comparison against people's values decides whenever it is conclusive (the candidate clearly better,
or clearly worse). Otherwise ChatGPT's labels decide, as adjusted for the teacher's learnt bias: a
student that learnt the truth would otherwise be judged for no longer copying its teacher's errors.
Each decision says which evidence decided it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model_store.worker.nutrition_model import NUTRIENTS, NutritionModel
from trainer.data import Dataset

MIN_IMPROVEMENT = 0.02  # the candidate's primary score must be at least 2% lower...
MIN_CONFIDENCE = 0.95  # ...and lower than the served one's in 95% of bootstrap resamples
RESAMPLES = 2000
SEED = 1234  # the same data and models always give the same decision
PRIMARY_SCORE = "mean over nutrients of MAE / mean label (lower is better)"
MIN_TRUTH_PHOTOS = 30  # below this, a 2% difference is mostly noise: ChatGPT's labels decide
EVIDENCE_TRUTH, EVIDENCE_CHATGPT = "truth", "chatgpt"
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
    evidence: str = EVIDENCE_CHATGPT  # what decided: people's corrections or ChatGPT's labels
    evidence_note: str = ""  # why that evidence

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
            "evidence": self.evidence,
            "evidence_note": self.evidence_note,
        }

    @property
    def conclusive(self) -> bool:
        """Clearly better, or clearly not: lower in at most 1 - MIN_CONFIDENCE of resamples."""
        return self.better or self.confidence <= 1 - MIN_CONFIDENCE

    def summary(self) -> str:
        on = f"on {self.evidence}" + (f" ({self.evidence_note})" if self.evidence_note else "")
        return f"{on}: gain {self.improvement:+.1%}, lower in {self.confidence:.0%} of resamples"


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


def decide(candidate: NutritionModel, served: NutritionModel, labels: Dataset, truth: Dataset) -> Comparison:
    """On the held-out truth when it is large enough and conclusive, else on `labels` (ChatGPT's)."""
    if len(truth) >= MIN_TRUTH_PHOTOS:
        on_truth = compare(candidate, served, truth)
        on_truth.evidence = EVIDENCE_TRUTH
        on_truth.evidence_note = f"{len(truth)} held-out corrected photos"
        if on_truth.conclusive:
            return on_truth
        note = f"the truth was inconclusive on {len(truth)} photos ({on_truth.confidence:.0%})"
    else:
        note = f"{len(truth)} held-out corrected photos, {MIN_TRUTH_PHOTOS} needed to decide"
    on_labels = compare(candidate, served, labels)
    on_labels.evidence, on_labels.evidence_note = EVIDENCE_CHATGPT, note
    return on_labels


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
