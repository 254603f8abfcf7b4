"""Facts about nutrient values that every service checks the same way."""

from __future__ import annotations

import math

NUTRIENTS = ("calories_kcal", "proteins_g", "fats_g", "carbs_g")

# Plausible bounds for one plate; anything outside is refused (never a label, never a correction).
BOUNDS = {
    "portion_g": (5.0, 3000.0),
    "calories_kcal": (0.0, 5000.0),
    "proteins_g": (0.0, 400.0),
    "fats_g": (0.0, 400.0),
    "carbs_g": (0.0, 700.0),
    "confidence": (0.0, 1.0),
}


def atwater_kcal(proteins_g: float, fats_g: float, carbs_g: float) -> float:
    """Calories implied by the macros: 4 kcal/g protein and carbs, 9 kcal/g fat."""
    return 4 * proteins_g + 4 * carbs_g + 9 * fats_g


def out_of_bounds(name: str, value: float) -> str | None:
    """A reason when `value` is not finite or outside BOUNDS[name], else None."""
    if not math.isfinite(value):
        return f"{name} is not a finite number"
    low, high = BOUNDS[name]
    if not low <= value <= high:
        return f"{name}={value:g} is outside the plausible range [{low:g}, {high:g}]"
    return None
