"""CHATGPT_DAILY_BUDGET_USD: what ChatGPT may cost per UTC day. At the limit, labels wait as
pending (most uncertain first when they go) and are fetched after midnight UTC; nothing is dropped."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session

from foodcal.store import Database
from foodcal.store.reads import chatgpt_spent_since
from foodcal.store.tables import utcnow
from gateway.recent import Recent

REFRESH_S = 5.0  # spend is read at most this often: a few calls may overshoot by one refresh


def start_of_day(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def next_midnight(now: datetime) -> datetime:
    return start_of_day(now) + timedelta(days=1)


def spent_today(session: Session, now: datetime | None = None) -> float:
    return chatgpt_spent_since(session, start_of_day(now or utcnow()))


class DailyBudget:
    def __init__(self, db: Database, limit_usd: float, refresh_s: float | None = None) -> None:
        self.db, self.limit_usd = db, limit_usd
        self._recent = Recent(REFRESH_S if refresh_s is None else refresh_s)

    async def exhausted(self) -> bool:
        if self.limit_usd <= 0:
            return False
        return await self._recent.get("spent today", self._spent) >= self.limit_usd

    def _spent(self) -> float:
        with self.db.session() as session:
            return spent_today(session)
