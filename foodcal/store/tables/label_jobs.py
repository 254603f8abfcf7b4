"""A sample's label job: the queue's state and lease (gateway/label_queue.py), and the label it got."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from foodcal.domain.items import FoodItem
from foodcal.domain.labels import Label, LabelSource, LabelStatus
from foodcal.store.tables.columns import Nutrients, nutrients_of, set_nutrients


class LabelJob(SQLModel, table=True):
    """One per sample, written by the gateway (AnalyzeMeal, the label queue)."""

    __tablename__ = "label_jobs"

    sample_id: str = Field(primary_key=True, foreign_key="samples.id", ondelete="CASCADE", max_length=32)
    status: str = Field(default=LabelStatus.NOT_REQUESTED, index=True, max_length=20)
    # Why ChatGPT was or was not asked (gateway/label_policy.py), and how much its label would
    # teach (pending labels held by the daily budget go most uncertain first).
    policy_reason: str = ""
    uncertainty: float = 0.0
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, index=True)
    claimed_until: datetime | None = None
    claimed_by: str | None = None
    error: str = ""  # also why ChatGPT refused, when REJECTED
    # The label (foodcal.domain.labels.Label): set_label() and `label` are the only way in and out.
    label_source: str | None = Field(default=None, max_length=20)  # None: no label
    label_dish: str = ""
    label_portion_g: float | None = None
    label_confidence: float | None = None
    label_provider: str = ""
    label_model: str = ""
    label_flags: list | None = Field(default=None, sa_column=Column(JSON))
    label_items: list | None = Field(default=None, sa_column=Column(JSON))  # FoodItem.to_json()s
    label_calories_kcal: float | None = None
    label_proteins_g: float | None = None
    label_fats_g: float | None = None
    label_carbs_g: float | None = None
    cached: bool = False  # the labeler answered from its cache
    labeled_at: datetime | None = None

    @property
    def nutrients(self) -> Nutrients | None:
        return nutrients_of(self, "label")

    @property
    def label(self) -> Label | None:
        if self.label_source is None:
            return None
        return Label(
            source=LabelSource(self.label_source),
            dish=self.label_dish,
            portion_g=self.label_portion_g or 0.0,
            nutrients=self.nutrients,
            confidence=self.label_confidence or 0.0,
            provider=self.label_provider,
            model=self.label_model,
            flags=tuple(self.label_flags or ()),
            items=tuple(FoodItem.from_json(item) for item in self.label_items or ()),
            rejection_reason=self.error if self.status == LabelStatus.REJECTED else "",
        )

    def set_label(self, label: Label | None) -> None:
        """The rejection reason is the caller's to put in `error` (with the status)."""
        self.label_source = None if label is None else str(label.source)
        self.label_dish = label.dish if label else ""
        self.label_portion_g = label.portion_g if label else None
        self.label_confidence = label.confidence if label else None
        self.label_provider, self.label_model = (label.provider, label.model) if label else ("", "")
        self.label_flags = list(label.flags) if label else None
        self.label_items = [item.to_json() for item in label.items] if label else None
        set_nutrients(self, "label", label.nutrients if label else None)
