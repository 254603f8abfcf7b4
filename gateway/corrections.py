"""A person's correction: totals, items, or both, checked before anything is stored; flagged when
it is far from both ChatGPT's label and our prediction (trainer/trust.py decides what that means for
training)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from foodcal.domain.convert import nutrition_values
from foodcal.domain.items import MAX_ITEMS, MAX_NAME_CHARS, FoodItem, items_problem, mismatches, totals
from foodcal.domain.nutrition import NUTRIENTS, out_of_bounds
from foodcal.v1 import gateway_pb2


class InvalidCorrection(ValueError):
    """`reason` is the ErrorInfo reason; `metadata` names what was wrong."""

    def __init__(self, message: str, reason: str, **metadata: str) -> None:
        super().__init__(message)
        self.reason, self.metadata = reason, metadata


@dataclass(frozen=True)
class Correction:
    values: tuple[float, float, float, float]
    items: list[FoodItem] | None  # None: totals only


def check_sizes(request: gateway_pb2.CorrectSampleRequest) -> None:
    """Counts and lengths as sent, before anything is built: a flood of items costs nothing."""
    if len(request.items) > MAX_ITEMS:
        raise InvalidCorrection(f"at most {MAX_ITEMS} items (got {len(request.items)})", "INVALID_ITEMS")
    # Names are stripped before the exact limit; twice it bounds what stripping has to read.
    if any(len(item.name) > 2 * MAX_NAME_CHARS for item in request.items):
        raise InvalidCorrection(f"item names are at most {MAX_NAME_CHARS} characters", "INVALID_ITEMS")


def correction_of(request: gateway_pb2.CorrectSampleRequest) -> Correction:
    """Items alone set the totals to their sum; with both, the items must add up to the totals
    (the same tolerance as ChatGPT's items); totals alone carry no items."""
    check_sizes(request)
    has_totals, items = request.HasField("nutrition"), [FoodItem.from_proto(i) for i in request.items]
    if not has_totals and not items:
        raise InvalidCorrection("nutrition or items is required", "NUTRITION_MISSING")
    problem = items_problem(items)
    if problem:
        raise InvalidCorrection(problem, "INVALID_ITEMS")
    values = nutrition_values(request.nutrition) if has_totals else totals(items)
    for name, value in zip(NUTRIENTS, values, strict=True):
        reason = out_of_bounds(name, value)
        if reason:
            raise InvalidCorrection(reason, "NUTRITION_OUT_OF_BOUNDS", nutrient=name)
    if has_totals and items:
        off = mismatches(items, values)
        if off:
            raise InvalidCorrection(
                f"the items do not add up to the totals ({', '.join(off)}): send matching totals, or "
                "items alone",
                "ITEMS_DO_NOT_ADD_UP",
                nutrient=off[0],
            )
    return Correction(values, items or None)


# A correction more than 2.5× off (either way) in calories from every reference it has is flagged.
# Vision LLMs are 30-40% off on some dishes; 2.5× is a typo, a wrong photo or an attack.
FLAG_FACTOR = 2.5
_OFFSET_KCAL = 10.0  # a 0 kcal reference (black coffee) would make any ratio infinite


def flag_of(
    values: tuple[float, ...], label: tuple[float, ...] | None, prediction: tuple[float, ...] | None
) -> str:
    """Why the correction is far from both ChatGPT's label and our prediction; "" if it is not."""
    references = [
        (name, ref) for name, ref in (("ChatGPT's label", label), ("our prediction", prediction)) if ref
    ]
    ratios = [
        (name, (values[0] + _OFFSET_KCAL) / (max(ref[0], 0.0) + _OFFSET_KCAL)) for name, ref in references
    ]
    if not ratios or any(abs(math.log(ratio)) <= math.log(FLAG_FACTOR) for _, ratio in ratios):
        return ""
    return "calories " + " and ".join(f"{ratio:.2g}× {name}" for name, ratio in ratios)
