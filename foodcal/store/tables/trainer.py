"""The trainer's tables: training runs and model versions (gateway reads: foodcal/store/reads.py)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from foodcal.domain.convert import mirrors_proto_enum
from foodcal.store.tables.columns import new_id, utcnow
from foodcal.v1 import common_pb2


@mirrors_proto_enum(common_pb2.TrainingRunStatus, "TRAINING_RUN_STATUS_")
class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DEPLOYED = "deployed"
    CHALLENGER = "challenger"  # better offline; live as a challenger (trainer/rollout.py)
    NOT_DEPLOYED = "not_deployed"
    FAILED = "failed"


class TrainingRunRow(SQLModel, table=True):
    __tablename__ = "training_runs"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    finished_at: datetime | None = None
    status: str = Field(default=RunStatus.QUEUED, index=True, max_length=20)
    parameters: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    epochs: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    metrics: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    served_version_before: int | None = None
    result_version: int | None = None
    train_samples: int = 0
    val_samples: int = 0
    message: str = ""


class ModelVersionRow(SQLModel, table=True):
    __tablename__ = "model_versions"

    version: int = Field(primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    run_id: str | None = None
    mar_path: str = ""
    checkpoint_path: str = ""
    classifier_version: str = ""
    metrics: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # foodcal.domain.calibration.Calibration of this version on held-out labelled samples; None = never.
    calibration: dict | None = Field(default=None, sa_column=Column(JSON))
    served: bool = False
    description: str = ""
