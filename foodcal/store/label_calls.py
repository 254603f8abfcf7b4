"""Paid label calls in flight: one ChatGPT call per photo, model, prompt and note at a time, across
every labeler replica (labeler/in_flight.py). A process lock only guards one replica."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class LabelCallInFlight(SQLModel, table=True):
    __tablename__ = "label_calls_in_flight"

    # The label cache's key (LabelCache): the answer this call will store.
    image_sha256: str = Field(primary_key=True, max_length=64)
    model: str = Field(primary_key=True)
    prompt_version: int = Field(primary_key=True)
    note_sha256: str = Field(default="", primary_key=True, max_length=64)
    owner: str = Field(max_length=32)  # one call's id
    # A replica that died mid-call leaves its claim to expire (its answer, if paid, is lost).
    expires_at: datetime
