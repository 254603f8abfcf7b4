"""Calibrated ranges for our numbers: split-conformal, per group of what predicts the error.

A version is calibrated on labelled samples it was not fitted on (a run's validation split). The
nonconformity score is the relative error |label - prediction| / prediction, so a range scales with
the plate. Scores are grouped by what predicts error (Mondrian conformal): the classifier's top-1
probability and how many training labels the top-1 dish had. A group with too few samples uses the
coarser group (confidence only), then all samples; with too few samples overall the range is an
honest, wide default and says it is uncalibrated. Numpy only: the gateway and the trainer use it.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np

DEFAULT_LEVEL = 0.80
# Groups that include the label policy's own default thresholds (top-1 0.6, 10 labels per dish):
# the policy decides from these features only, never from the label, so within each group the
# labelled samples stay exchangeable with the photos it skipped and the ranges stay calibrated.
CONFIDENCE_EDGES = (0.6, 0.9)  # top-1 probability: unsure < 0.6 <= fair < 0.9 <= confident
LABEL_EDGES = (10, 40)  # training labels of the top-1 dish: few < 10 <= some < 40 <= many
MIN_GROUP = 30  # samples a group needs for its own quantile
UNCALIBRATED_HALF_WIDTH = 0.6  # ±60%: about what version 0 misses by on a typical plate
MIN_RELATIVE_DENOMINATOR = 0.1  # of the nutrient's mean label: 0 g of fat is not a 100% error


EXPLORATION_REASON = "exploration"  # how the label policy's reason starts for a chance label


def exploration_reason(rate: float) -> str:
    """The label policy's reason for a chance label, with the rate it was drawn at (read back by
    `label_weight`: LABEL_POLICY_EXPLORATION may change between a photo and its training run)."""
    return f"{EXPLORATION_REASON} ({rate:.4%} of photos)"


_DRAWN_AT = re.compile(r"\(([0-9.]+)% of photos\)")


def label_weight(reason: str, exploration: float) -> float:
    """1 / the chance a labelled photo had of being labelled: one that no rule of the label policy
    asked for (gateway/label_policy.py) stands for 1/rate photos like it that were answered
    without ChatGPT, at the rate it was drawn at (`exploration`, today's, only when the reason does
    not say). Weighing by it (weighted split-conformal) keeps ranges calibrated for all traffic,
    not just for the photos that were asked about."""
    if not reason.startswith(EXPLORATION_REASON):
        return 1.0
    drawn = _DRAWN_AT.search(reason)
    rate = float(drawn.group(1)) / 100 if drawn else exploration
    return 1.0 / rate if rate > 0 else 1.0


def _bucket(value: float, edges: tuple[float, ...]) -> int:
    return int(np.searchsorted(edges, value, side="right"))


def group_keys(top1_probability: float, dish_labels: int) -> list[str]:
    """From the finest group to the coarsest."""
    confidence, labels = _bucket(top1_probability, CONFIDENCE_EDGES), _bucket(dish_labels, LABEL_EDGES)
    return [f"c{confidence}l{labels}", f"c{confidence}", "all"]


@dataclass
class Calibration:
    level: float = DEFAULT_LEVEL
    samples: int = 0
    # The relative half-width per nutrient for each group that had enough samples.
    half_widths: dict[str, list[float]] = field(default_factory=dict)
    denominators: list[float] = field(default_factory=lambda: [1.0] * 4)
    label_counts: list[int] = field(default_factory=list)  # training labels per class index

    @property
    def calibrated(self) -> bool:
        return "all" in self.half_widths

    def half_width(self, probabilities: np.ndarray) -> tuple[np.ndarray, str]:
        """Relative half-width per nutrient for one photo, and the group that gave it."""
        top1 = int(np.argmax(probabilities))
        labels = self.label_counts[top1] if top1 < len(self.label_counts) else 0
        for key in group_keys(float(probabilities[top1]), labels):
            if key in self.half_widths:
                return np.asarray(self.half_widths[key]), key
        return np.full(4, UNCALIBRATED_HALF_WIDTH), "uncalibrated"

    def ranges(self, prediction, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        """(low, high, group) for one prediction."""
        prediction = np.asarray(prediction, dtype=np.float64)
        width, key = self.half_width(probabilities)
        spread = width * np.maximum(np.abs(prediction), self.denominators)
        return np.maximum(prediction - spread, 0.0), prediction + spread, key

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> Calibration:
        return cls(**data) if data else cls()


def _conformal_quantile(scores: np.ndarray, level: float, weights: np.ndarray | None = None) -> float:
    """The split-conformal quantile: the ceil((n + 1) * level)-th smallest score. With weights
    (inverse labelling propensities), the weighted version: the smallest score whose weight share,
    counting one more sample of average weight for the photo being answered, reaches `level`.
    Infinite when the rank is beyond n: no score of these samples bounds `level` of the errors
    (clamping to the largest would claim a coverage it does not have)."""
    if weights is None:
        rank = math.ceil((len(scores) + 1) * level)
        return float(np.sort(scores)[rank - 1]) if rank <= len(scores) else math.inf
    order = np.argsort(scores)
    cumulative = np.cumsum(weights[order]) / (weights.sum() + weights.mean())
    rank = int(np.searchsorted(cumulative, level))
    return float(scores[order][rank]) if rank < len(scores) else math.inf


def fit(
    predictions: np.ndarray,  # [n, 4] the version's predictions on held-out labelled samples
    targets: np.ndarray,  # [n, 4] their labels
    probabilities: np.ndarray,  # [n, classes]
    label_counts: np.ndarray,  # [classes] training labels per dish
    level: float = DEFAULT_LEVEL,
    weights: np.ndarray | None = None,  # 1 / the chance each sample had to be labelled (the policy)
) -> Calibration:
    denominators = (
        MIN_RELATIVE_DENOMINATOR * np.maximum(np.abs(targets).mean(axis=0), 1e-6)
        if len(targets)
        else np.ones(4)
    )
    calibration = Calibration(
        level=level,
        samples=len(targets),
        denominators=[float(d) for d in denominators],
        label_counts=[int(c) for c in label_counts],
    )
    if len(targets) == 0:
        return calibration
    scores = np.abs(targets - predictions) / np.maximum(np.abs(predictions), denominators)
    top1 = probabilities.argmax(axis=1)
    keys = [
        group_keys(float(probabilities[i, top1[i]]), int(label_counts[top1[i]])) for i in range(len(targets))
    ]
    for depth in range(3):
        for key in {k[depth] for k in keys}:
            members = np.array([k[depth] == key for k in keys])
            if members.sum() >= MIN_GROUP:
                member_weights = None if weights is None else np.asarray(weights, dtype=np.float64)[members]
                widths = [
                    _conformal_quantile(scores[members, n], level, member_weights)
                    for n in range(scores.shape[1])
                ]
                if all(math.isfinite(w) for w in widths):  # else the coarser group, or uncalibrated
                    calibration.half_widths[key] = widths
    return calibration


def coverage(calibration: Calibration, predictions, targets, probabilities) -> np.ndarray:
    """Share of labels inside their range, per nutrient."""
    inside = []
    for prediction, target, probs in zip(predictions, targets, probabilities, strict=True):
        low, high, _ = calibration.ranges(prediction, probs)
        inside.append((target >= low) & (target <= high))
    return np.mean(inside, axis=0) if inside else np.full(4, np.nan)
