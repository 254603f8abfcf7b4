"""Items on a plate (ChatGPT's answer or a person's correction): one domain type, its stored and
protobuf forms, and the check that items add up to the plate's totals."""

from __future__ import annotations

import math
from dataclasses import dataclass

from foodcal.domain.convert import nutrition_proto, nutrition_values
from foodcal.domain.nutrition import NUTRIENTS, out_of_bounds
from foodcal.v1 import common_pb2

MAX_ITEMS = 20
MAX_NAME_CHARS = 100
# Items must add up to the totals within this share (with a floor for small values), per nutrient
# and for the weight; otherwise the label is flagged ITEMS_MISMATCH (not refused).
ITEMS_TOLERANCE = 0.10
_FLOORS = {"portion_g": 20.0, "calories_kcal": 20.0, "proteins_g": 3.0, "fats_g": 3.0, "carbs_g": 3.0}
ITEMS_MISMATCH = "items_mismatch"


@dataclass(frozen=True)
class FoodItem:
    name: str
    grams: float
    nutrients: tuple[float, float, float, float]

    def to_json(self) -> dict:
        return {"name": self.name, "grams": self.grams, "nutrients": list(self.nutrients)}

    @classmethod
    def from_json(cls, data: dict) -> FoodItem:
        return cls(data["name"], float(data["grams"]), tuple(data["nutrients"]))  # type: ignore[arg-type]

    def to_proto(self) -> common_pb2.FoodItem:
        return common_pb2.FoodItem(
            name=self.name, grams=self.grams, nutrition=nutrition_proto(self.nutrients)
        )

    @classmethod
    def from_proto(cls, message: common_pb2.FoodItem) -> FoodItem:
        return cls(message.name.strip(), message.grams, nutrition_values(message.nutrition))


def item_problem(item: FoodItem) -> str | None:
    """Why one item is not plausible, or None."""
    if not item.name:
        return "an item has no name"
    if len(item.name) > MAX_NAME_CHARS:
        return f"item names are at most {MAX_NAME_CHARS} characters"
    if not math.isfinite(item.grams) or not 0 < item.grams <= 3000:
        return f"item {item.name!r}: grams={item.grams:g} must be above 0 and at most 3000"
    for name, value in zip(NUTRIENTS, item.nutrients, strict=True):
        reason = out_of_bounds(name, value)
        if reason:
            return f"item {item.name!r}: {reason}"
    if max(item.nutrients[1:]) > item.grams:
        return f"item {item.name!r}: a nutrient weighs more than the item"
    return None


def items_problem(items: list[FoodItem]) -> str | None:
    if len(items) > MAX_ITEMS:
        return f"at most {MAX_ITEMS} items (got {len(items)})"
    return next((reason for item in items if (reason := item_problem(item))), None)


def totals(items: list[FoodItem]) -> tuple[float, float, float, float]:
    return tuple(sum(item.nutrients[i] for item in items) for i in range(4))  # type: ignore[return-value]


def mismatches(items: list[FoodItem], nutrients, portion_g: float | None = None) -> list[str]:
    """What the items do not add up to (nutrient names, "portion_g"), within ITEMS_TOLERANCE."""
    sums = dict(zip(NUTRIENTS, totals(items), strict=True))
    expected = dict(zip(NUTRIENTS, nutrients, strict=True))
    if portion_g is not None:
        sums["portion_g"], expected["portion_g"] = sum(item.grams for item in items), portion_g
    return [
        name
        for name, total in expected.items()
        if abs(sums[name] - total) > ITEMS_TOLERANCE * max(total, _FLOORS[name])
    ]
