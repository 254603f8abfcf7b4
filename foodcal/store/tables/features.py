"""The classifier's output for a sample: what the trainer learns from, cached so training never
re-runs the backbone. Written with the sample; rewritten by trainer/backfill.py for a new classifier."""

from __future__ import annotations

from sqlalchemy import JSON, Column, LargeBinary
from sqlmodel import Field, SQLModel


class SampleFeatures(SQLModel, table=True):
    __tablename__ = "sample_features"

    sample_id: str = Field(primary_key=True, foreign_key="samples.id", ondelete="CASCADE", max_length=32)
    classifier_version: str = Field(default="", index=True)
    # The top-5 [[dish, probability], …], and the top-1 dish: counts labels per dish for the label
    # policy without reading JSON.
    dishes: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    top1_dish: str = Field(default="", index=True, max_length=100)
    # little-endian float32 arrays, pooled over every angle of the plate
    embedding: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    class_probabilities: bytes | None = Field(default=None, sa_column=Column(LargeBinary))

    @staticmethod
    def values_of(classification) -> dict:
        """The columns of a model_store.torchserve_client.Classification (what the classifier answered)."""
        dishes = [[label, p] for label, p in classification.dishes]
        return {
            "classifier_version": classification.classifier,
            "dishes": dishes,
            "top1_dish": dishes[0][0][:100] if dishes else "",
            "embedding": classification.embedding.astype("<f4").tobytes(),
            "class_probabilities": classification.probabilities.astype("<f4").tobytes(),
        }
