"""The gateway's request bookkeeping: rate limits and AnalyzeMeal request ids."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, LargeBinary
from sqlmodel import Field, SQLModel

from foodcal.store.tables.columns import utcnow


class RateLimit(SQLModel, table=True):
    """One token bucket per client, shared by every gateway on the database (gateway/rate_limit.py):
    `tat` is the bucket's theoretical arrival time (GCRA), in seconds since the epoch."""

    __tablename__ = "rate_limits"

    identity: str = Field(primary_key=True, max_length=64)
    tat: float = 0.0


class AnalyzeRequest(SQLModel, table=True):
    """An AnalyzeMeal `request_id` of one client: claimed before the work, answered after it, so a
    retry returns the first answer instead of storing a second sample (gateway/idempotency.py)."""

    __tablename__ = "analyze_requests"

    owner: str = Field(primary_key=True, max_length=64)
    request_id: str = Field(primary_key=True, max_length=128)
    request_sha256: str = Field(max_length=64)  # the request without its id: a reused id is refused
    created_at: datetime = Field(default_factory=utcnow, index=True)
    claimed_at: datetime = Field(default_factory=utcnow)
    sample_id: str | None = Field(default=None, max_length=32)
    response: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
