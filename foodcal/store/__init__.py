"""The sample store: database tables, sessions, migrations and the content-addressed images."""

from foodcal.store.db import Database
from foodcal.store.image_stores import open_image_store
from foodcal.store.images import ImageStore, StoredImage
from foodcal.store.label_calls import LabelCallInFlight
from foodcal.store.rollouts import Rollout, RolloutMode, RolloutState
from foodcal.store.s3_images import S3ImageStore
from foodcal.store.tables import (
    AnalyzeRequest,
    ChatGPTCall,
    CorrectionReview,
    LabelCache,
    LabelJob,
    LabelStatus,
    ModelVersionRow,
    PairedPrediction,
    RateLimit,
    RunStatus,
    Sample,
    SampleCorrection,
    SampleFeatures,
    TrainingRunRow,
)

__all__ = [
    "AnalyzeRequest",
    "ChatGPTCall",
    "CorrectionReview",
    "Database",
    "ImageStore",
    "LabelCache",
    "LabelCallInFlight",
    "LabelJob",
    "LabelStatus",
    "ModelVersionRow",
    "PairedPrediction",
    "RateLimit",
    "Rollout",
    "RolloutMode",
    "RolloutState",
    "RunStatus",
    "S3ImageStore",
    "Sample",
    "SampleCorrection",
    "SampleFeatures",
    "StoredImage",
    "TrainingRunRow",
    "open_image_store",
]
