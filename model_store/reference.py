"""The reference nutrition table: one typical serving for each of the 101 Food-101 dishes."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TABLE_PATH = Path(__file__).with_name("reference_nutrition.csv")


@dataclass(frozen=True)
class ReferenceDish:
    label: str
    serving_g: float
    calories_kcal: float
    proteins_g: float
    fats_g: float
    carbs_g: float
    source: str

    @property
    def nutrients(self) -> tuple[float, float, float, float]:
        return (self.calories_kcal, self.proteins_g, self.fats_g, self.carbs_g)


def normalise_label(label: str) -> str:
    """Checkpoints spell labels 'apple_pie' or 'Apple pie'; the table uses 'apple_pie'."""
    return label.strip().lower().replace(" ", "_").replace("-", "_")


@cache
def reference_table() -> dict[str, ReferenceDish]:
    with TABLE_PATH.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        row["label"]: ReferenceDish(
            label=row["label"],
            serving_g=float(row["serving_g"]),
            calories_kcal=float(row["calories_kcal"]),
            proteins_g=float(row["proteins_g"]),
            fats_g=float(row["fats_g"]),
            carbs_g=float(row["carbs_g"]),
            source=row["source"],
        )
        for row in rows
    }


def food101_labels() -> list[str]:
    """The 101 Food-101 class names, in the classifier's index order (alphabetical)."""
    return sorted(reference_table())


def lookup(label: str) -> ReferenceDish:
    try:
        return reference_table()[normalise_label(label)]
    except KeyError:
        raise KeyError(f"dish {label!r} is not in the reference nutrition table") from None


def table_for_labels(labels: list[str]) -> list[tuple[float, float, float, float]]:
    """Rows of the table in the order of a classifier's id2label; every label must be known."""
    missing = [label for label in labels if normalise_label(label) not in reference_table()]
    if missing:
        raise KeyError(f"labels missing from the reference nutrition table: {missing[:5]}")
    return [lookup(label).nutrients for label in labels]
