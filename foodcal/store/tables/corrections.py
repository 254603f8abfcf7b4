"""A person's correction of a sample (gateway/correction_rpcs.py) and an admin's review of it."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from foodcal.domain.convert import mirrors_proto_enum
from foodcal.store.tables.columns import Nutrients, nutrients_of
from foodcal.v1 import common_pb2


@mirrors_proto_enum(common_pb2.CorrectionReview, "CORRECTION_REVIEW_")
class CorrectionReview(enum.StrEnum):
    UNREVIEWED = ""
    CONFIRMED = "confirmed"  # an admin vouches for a flagged correction: it is learned from
    REJECTED = "rejected"  # kept for the record; never learned from, never scored against


class SampleCorrection(SQLModel, table=True):
    """At most one per sample; a person's correction outranks ChatGPT wherever training data is read."""

    __tablename__ = "corrections"

    sample_id: str = Field(primary_key=True, foreign_key="samples.id", ondelete="CASCADE", max_length=32)
    calories_kcal: float | None = None
    proteins_g: float | None = None
    fats_g: float | None = None
    carbs_g: float | None = None
    # foodcal.domain.items.FoodItem.to_json() of each corrected item; None = totals only.
    items: list | None = Field(default=None, sa_column=Column(JSON))
    corrected_at: datetime | None = None
    corrected_by: str | None = Field(default=None, max_length=64)  # gateway.auth identity
    # Why the correction is far from both ChatGPT and our prediction (gateway/corrections.py);
    # "" = not flagged. A flagged correction is not learned from until confirmed (trainer/data.py).
    flag: str = ""
    review: str = Field(default="", max_length=20)  # CorrectionReview: "", confirmed, rejected

    @property
    def nutrients(self) -> Nutrients | None:
        return nutrients_of(self)
