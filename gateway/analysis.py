"""What AnalyzeMeal found for one plate, before it becomes the answer (gateway/responses.py)."""

from __future__ import annotations

from dataclasses import dataclass

from foodcal.store import Sample
from foodcal.v1 import gateway_pb2
from gateway.portion import Portion
from model_store.torchserve_client import Classification, NutritionPrediction


@dataclass
class OwnRange:
    low: tuple[float, ...]
    high: tuple[float, ...]
    level: float
    calibrated: bool
    group: str


@dataclass
class Analysis:
    sample: Sample
    classification: Classification
    prediction: NutritionPrediction
    shown: tuple[float, float, float, float]
    duplicate_image: bool
    own_range: OwnRange
    own_portion: Portion | None = None
    response: gateway_pb2.AnalyzeMealResponse | None = None  # the answer, once saved with the sample
