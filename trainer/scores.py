"""Errors of a version's predictions against one kind of truth, overall and per dish."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from foodcal.domain.convert import nutrition_proto
from foodcal.v1 import trainer_pb2

MIN_DISH_SAMPLES = 3
Z95 = 1.959964  # the MAE's 95% interval: mean ± z · sd / sqrt(n) (normal approximation)


@dataclass
class Errors:
    samples: int
    mae: tuple[float, ...]
    bias: tuple[float, ...]  # mean of prediction - truth
    score: float  # PRIMARY_SCORE
    relative: tuple[float, ...] = (0.0,) * 4  # MAE / mean truth
    mae_low: tuple[float, ...] = (0.0,) * 4  # the MAE's 95% interval
    mae_high: tuple[float, ...] = (0.0,) * 4

    @classmethod
    def of(cls, predictions: np.ndarray, truths: np.ndarray) -> Errors:
        if len(truths) == 0:
            return cls(0, (0.0,) * 4, (0.0,) * 4, 0.0)
        difference = predictions.astype(np.float64) - truths.astype(np.float64)
        absolute = np.abs(difference)
        mae = absolute.mean(axis=0)
        scale = np.maximum(np.abs(truths).mean(axis=0), 1e-6)
        spread = absolute.std(axis=0, ddof=1) if len(truths) > 1 else np.full(4, np.inf)
        half = Z95 * spread / np.sqrt(len(truths))

        def values(array) -> tuple[float, ...]:
            return tuple(map(float, array))

        return cls(
            len(truths),
            values(mae),
            values(difference.mean(axis=0)),
            float((mae / scale).mean()),
            values(mae / scale),
            values(np.maximum(mae - half, 0)),
            values(mae + half),
        )

    def as_dict(self) -> dict:
        return {"samples": self.samples, "mae": list(self.mae), "bias": list(self.bias), "score": self.score}

    @classmethod
    def from_dict(cls, data: dict) -> Errors:
        return cls(data["samples"], tuple(data["mae"]), tuple(data["bias"]), data["score"])

    def to_proto(self) -> trainer_pb2.QualityErrors:
        return trainer_pb2.QualityErrors(
            samples=self.samples,
            mae=nutrition_proto(self.mae),
            bias=nutrition_proto(self.bias),
            score=self.score,
            relative_error=nutrition_proto(self.relative) if self.samples else None,
            mae_low=nutrition_proto(self.mae_low) if self.samples else None,
            mae_high=nutrition_proto(self.mae_high) if self.samples else None,
        )


@dataclass
class Score:
    overall: Errors
    dishes: dict[str, Errors]  # only dishes with at least min_dish_samples

    @classmethod
    def of(cls, predictions, truths, dishes: list[str], min_dish_samples: int) -> Score:
        rows: dict[str, list[int]] = defaultdict(list)
        for index, dish in enumerate(dishes):
            rows[dish or "unknown"].append(index)
        return cls(
            Errors.of(predictions, truths),
            {
                dish: Errors.of(predictions[index], truths[index])
                for dish, index in rows.items()
                if len(index) >= min_dish_samples
            },
        )

    def worst(self, count: int) -> list[tuple[str, Errors]]:
        return sorted(self.dishes.items(), key=lambda item: (-item[1].score, item[0]))[:count]

    def to_proto(self, worst_dishes: int) -> trainer_pb2.QualityScore:
        return trainer_pb2.QualityScore(
            overall=self.overall.to_proto(),
            worst_dishes=[
                trainer_pb2.DishQuality(dish=dish, errors=errors.to_proto())
                for dish, errors in self.worst(worst_dishes)
            ],
        )
