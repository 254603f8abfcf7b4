"""The weight our own numbers assume, and how we know it.

Version 0 is the reference table: probabilities × one typical serving per dish, so its portion is
the same weighting of the table's serving grams. The classifier's label order is the checkpoint's
own, known to TorchServe only; the gateway has the top dishes with their names, so the weighting
runs over those, renormalised (the top 5 carry nearly all the probability). A trained version
predicts nutrients, not weight: its portion is its calories at the energy density (kcal per gram)
of those same reference servings, and the basis says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from model_store.reference import lookup


@dataclass(frozen=True)
class Portion:
    grams: float
    basis: str


def own_portion(dishes: list[tuple[str, float]], version: int, calories_kcal: float) -> Portion | None:
    """None when no dish of `dishes` is in the reference table (nothing to weigh)."""
    weights = grams = kcal = 0.0
    for label, probability in dishes:
        try:
            dish = lookup(label)
        except KeyError:
            continue
        weights += probability
        grams += probability * dish.serving_g
        kcal += probability * dish.calories_kcal
    if weights <= 0 or grams <= 0:
        return None
    grams, kcal = grams / weights, kcal / weights
    servings = f"reference servings of the top {len(dishes)} dishes weighted by their probabilities"
    if version == 0 or kcal <= 0:
        return Portion(round(grams, 1), f"{servings} (version 0, the reference table)")
    density = kcal / grams
    return Portion(
        round(calories_kcal / density, 1),
        f"version {version} predicts nutrients, not weight: its calories at the energy density of the "
        f"{servings} ({100 * density:.0f} kcal per 100 g)",
    )
