"""Database tables, one module per owner's job. Schema changes go through alembic
(foodcal/store/migrations); who writes and who reads each table: docs/architecture.md."""

from foodcal.domain.labels import LabelStatus
from foodcal.store.tables.columns import (
    Nutrients,
    new_id,
    nutrient_names,
    nutrients_of,
    set_nutrients,
    utcnow,
)
from foodcal.store.tables.corrections import CorrectionReview, SampleCorrection
from foodcal.store.tables.features import SampleFeatures
from foodcal.store.tables.label_jobs import LabelJob
from foodcal.store.tables.labeler import ChatGPTCall, LabelCache
from foodcal.store.tables.requests import AnalyzeRequest, RateLimit
from foodcal.store.tables.samples import PairedPrediction, Sample
from foodcal.store.tables.trainer import ModelVersionRow, RunStatus, TrainingRunRow

__all__ = [
    "AnalyzeRequest",
    "ChatGPTCall",
    "CorrectionReview",
    "LabelCache",
    "LabelJob",
    "LabelStatus",
    "ModelVersionRow",
    "Nutrients",
    "PairedPrediction",
    "RateLimit",
    "RunStatus",
    "Sample",
    "SampleCorrection",
    "SampleFeatures",
    "TrainingRunRow",
    "new_id",
    "nutrient_names",
    "nutrients_of",
    "set_nutrients",
    "utcnow",
]
