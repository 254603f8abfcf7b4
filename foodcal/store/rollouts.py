"""A version's trial on live traffic: as a challenger beside the served version, then watched
while served (trainer/rollout.py decides; the gateway reads the live challenger)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel, col, select

from foodcal.store.db import Database
from foodcal.store.tables import new_id, utcnow


class RolloutMode(enum.StrEnum):
    REPLACE = "replace"  # served at once; watched against the version it replaced
    SHADOW = "shadow"  # every request also asks the challenger; only the champion's numbers are shown
    SPLIT = "split"  # a share of photos (sticky by image hash) is answered by the challenger


class RolloutState(enum.StrEnum):
    CHALLENGER = "challenger"  # live beside the served version, not yet decided
    RETIRED = "retired"  # lost on live traffic (or was replaced by another challenger)
    SERVED = "served"  # promoted or deployed; watched against `baseline_version`
    ROLLED_BACK = "rolled_back"  # clearly worse than `baseline_version` on live traffic
    SUPERSEDED = "superseded"  # another version became served; the watch ended


class Rollout(SQLModel, table=True):
    __tablename__ = "rollouts"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    version: int = Field(index=True)
    baseline_version: int  # the served version it is compared with
    mode: str = Field(max_length=10)
    split_percent: float = 0.0
    state: str = Field(index=True, max_length=20)
    started_at: datetime = Field(default_factory=utcnow)
    served_at: datetime | None = None  # from then on its live answers are watched
    ended_at: datetime | None = None
    # Every decision, oldest first: {"at", "decision", "reason", "comparison": gate.Comparison.as_dict()}.
    decisions: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


def in_state(db: Database, state: RolloutState, version: int | None = None) -> list[Rollout]:
    """The rollouts in `state` (of `version`), oldest first: the one read of live rollouts, for the
    trainer, which owns them, and the gateway, which answers with the live challenger."""
    query = select(Rollout).where(Rollout.state == state)
    if version is not None:
        query = query.where(Rollout.version == version)
    with db.session() as session:
        return list(session.exec(query.order_by(col(Rollout.started_at))))
