"""The labeler's tables: its answer cache and every paid call (gateway reads: foodcal/store/reads.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from foodcal.store.tables.columns import new_id, utcnow


class LabelCache(SQLModel, table=True):
    """One paid answer per photo, model, prompt and note: a photo is never paid for twice, and
    another model (OPENAI_MODEL changed), prompt or note is never answered with this one's numbers."""

    __tablename__ = "label_cache"

    image_sha256: str = Field(primary_key=True, max_length=64)
    model: str = Field(primary_key=True)  # the model asked (OPENAI_MODEL); `label` names who answered
    prompt_version: int = Field(primary_key=True)  # labeler.answer.PROMPT_VERSION
    note_sha256: str = Field(default="", primary_key=True, max_length=64)  # "" = no note
    created_at: datetime = Field(default_factory=utcnow)
    outcome: str = Field(max_length=20)  # "labeled" or "rejected"
    label: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    hits: int = 0


class ChatGPTCall(SQLModel, table=True):
    """Every paid call, whatever its outcome: the source of GetStats' usage and cost."""

    __tablename__ = "chatgpt_calls"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    image_sha256: str = Field(max_length=64)
    model: str = ""
    outcome: str = Field(max_length=20)  # labeled, rejected, invalid_answer
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
