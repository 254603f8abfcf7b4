"""What the trainer learns from: the classifier's output for a sample, cached so training never
re-runs the backbone. Written with the sample; rewritten by trainer/backfill.py for a new classifier."""

from __future__ import annotations

from sqlalchemy import Column, LargeBinary
from sqlmodel import Field, SQLModel


class SampleFeatures(SQLModel, table=True):
    __tablename__ = "sample_features"

    sample_id: str = Field(primary_key=True, foreign_key="samples.id", ondelete="CASCADE", max_length=32)
    classifier_version: str = Field(default="", index=True)
    # little-endian float32 arrays, pooled over every angle of the plate
    embedding: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    class_probabilities: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
