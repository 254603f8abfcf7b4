"""The sample store: database tables, sessions, migrations and the content-addressed images."""

from foodcal.store.db import Database
from foodcal.store.images import ImageStore, StoredImage
from foodcal.store.tables import (
    ChatGPTCall,
    LabelCache,
    LabelStatus,
    ModelVersionRow,
    RunStatus,
    Sample,
    TrainingRunRow,
)

__all__ = [
    "ChatGPTCall",
    "Database",
    "ImageStore",
    "LabelCache",
    "LabelStatus",
    "ModelVersionRow",
    "RunStatus",
    "Sample",
    "StoredImage",
    "TrainingRunRow",
]
