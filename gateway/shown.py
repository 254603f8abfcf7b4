"""The numbers a person sees for a sample, in one place: day totals and exports both read them."""

from __future__ import annotations

from foodcal.store import Sample

CORRECTION, CHATGPT = "NUTRITION_SOURCE_CORRECTION", "NUTRITION_SOURCE_CHATGPT"
OWN_MODEL, REFERENCE = "NUTRITION_SOURCE_OWN_MODEL", "NUTRITION_SOURCE_REFERENCE"


def shown(sample: Sample) -> tuple[tuple[float, float, float, float] | None, str]:
    """(values, NutritionSource name): a person's correction wins over any prediction or label;
    otherwise what AnalyzeMeal showed (ChatGPT's label, or our prediction when it was shown)."""
    correction = sample.values("correction")
    if correction is not None:
        return correction, CORRECTION
    label, prediction = sample.values("label"), sample.values("pred")
    if sample.shown_source == CHATGPT and label is not None:
        return label, CHATGPT
    if prediction is not None:
        source = sample.shown_source if sample.shown_source in (OWN_MODEL, REFERENCE) else None
        return prediction, source or (OWN_MODEL if sample.pred_model_version else REFERENCE)
    return (label, CHATGPT) if label is not None else (None, "NUTRITION_SOURCE_UNSPECIFIED")
