"""What we ask ChatGPT for, and how its answer is checked before it may become a label."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from foodcal.nutrition import BOUNDS, NUTRIENTS, atwater_kcal, out_of_bounds

# Calories more than this far from 4·protein + 4·carbs + 9·fat are flagged (not refused).
ATWATER_TOLERANCE = 0.25
CALORIE_MISMATCH = "calorie_mismatch"

SCHEMA = {
    "type": "object",
    "properties": {
        "is_food": {"type": "boolean", "description": "false when the photo shows no food or drink"},
        "dish": {"type": "string", "description": "the dish's common name"},
        "portion_g": {"type": "number", "description": "estimated weight of the whole plate in grams"},
        "calories_kcal": {"type": "number"},
        "proteins_g": {"type": "number"},
        "fats_g": {"type": "number"},
        "carbs_g": {"type": "number"},
        "confidence": {"type": "number", "description": "0 to 1: how sure you are of these numbers"},
    },
    "required": ["is_food", "dish", "portion_g", *NUTRIENTS, "confidence"],
    "additionalProperties": False,
}

# Cached answers are keyed by this: bump it whenever SYSTEM_PROMPT, user_prompt or SCHEMA change,
# so a new prompt is never answered from the old one's cache (tests pin a fingerprint of all three).
PROMPT_VERSION = 1

RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "meal_nutrition", "strict": True, "schema": SCHEMA},
}

SYSTEM_PROMPT = (
    "You are a dietitian. Estimate the nutrition of everything visible on the plate in the photo: "
    "the dish, the total portion weight in grams, and the total calories (kcal), proteins, fats and "
    "carbohydrates (grams) of that portion. If the photo shows no food, set is_food to false and "
    "all numbers to 0. Never guess numbers for something that is not food."
)


def user_prompt(hints: list[tuple[str, float]]) -> str:
    if not hints:
        return "Estimate this meal."
    listed = ", ".join(f"{label.replace('_', ' ')} ({p:.0%})" for label, p in hints[:3])
    return f"Estimate this meal. An image classifier's top guesses (may be wrong): {listed}."


class InvalidAnswer(ValueError):
    """The model's answer is malformed or implausible."""


@dataclass
class Answer:
    dish: str
    portion_g: float
    nutrients: tuple[float, float, float, float]
    confidence: float
    is_food: bool
    flags: list[str] = field(default_factory=list)


def parse_answer(content: str | None) -> Answer:
    """Parse and validate; raises InvalidAnswer with a reason a person can read."""
    try:
        data = json.loads(content or "")
    except json.JSONDecodeError:
        raise InvalidAnswer("the answer is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidAnswer("the answer is not a JSON object")
    missing = [key for key in SCHEMA["required"] if key not in data]
    if missing:
        raise InvalidAnswer(f"the answer lacks {', '.join(missing)}")
    if not isinstance(data["is_food"], bool) or not isinstance(data["dish"], str):
        raise InvalidAnswer("is_food must be a boolean and dish a string")
    numbers = {}
    for key in ("portion_g", *NUTRIENTS, "confidence"):
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidAnswer(f"{key} is not a finite number")
        numbers[key] = float(value)
    answer = Answer(
        dish=data["dish"].strip()[:200],
        portion_g=numbers["portion_g"],
        nutrients=tuple(numbers[key] for key in NUTRIENTS),  # type: ignore[arg-type]
        confidence=numbers["confidence"],
        is_food=data["is_food"],
    )
    if not answer.is_food:
        return answer  # the caller records "not food"; the numbers are never used
    for key in BOUNDS:
        reason = out_of_bounds(key, numbers[key])
        if reason:
            raise InvalidAnswer(reason)
    if max(numbers["proteins_g"], numbers["fats_g"], numbers["carbs_g"]) > numbers["portion_g"]:
        raise InvalidAnswer("a nutrient weighs more than the whole portion")
    if numbers["calories_kcal"] <= 0:
        raise InvalidAnswer("a plate of food with 0 kcal is not plausible")
    expected = atwater_kcal(numbers["proteins_g"], numbers["fats_g"], numbers["carbs_g"])
    if abs(numbers["calories_kcal"] - expected) > ATWATER_TOLERANCE * max(expected, 50.0):
        answer.flags.append(CALORIE_MISMATCH)
    return answer
