"""AnalyzeMeal per client token: a token bucket kept in the database, shared by every gateway.

The bucket is the generic cell rate algorithm (GCRA): one number per client, its theoretical
arrival time `tat`. A call is allowed when `tat <= now + tolerance` and then moves `tat` one
interval on, in a single conditional UPDATE, so gateways on one database (SQLite or PostgreSQL) never
both spend the last token. `CLIENT_RATE_PER_MINUTE` sets the interval (60 / rate seconds) and
`CLIENT_RATE_BURST` how many calls may come at once after a quiet spell. Time is the gateways'
wall clock: gateways whose clocks differ by a second grant that second's worth more or less.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError

from foodcal.store import Database, RateLimit


class RateLimiter:
    def __init__(
        self, db: Database, per_minute: float, burst: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.db, self.clock = db, clock
        self.per_minute, self.burst = per_minute, burst
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self.tolerance = (burst - 1) * self.interval

    def __str__(self) -> str:
        return f"CLIENT_RATE_PER_MINUTE={self.per_minute:g}, CLIENT_RATE_BURST={self.burst}"

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def take(self, identity: str) -> float | None:
        """Spend one call of `identity`'s bucket: None when allowed, else the seconds to wait."""
        if not self.enabled:
            return None
        now = self.clock()
        spend = (
            update(RateLimit)
            .where(RateLimit.identity == identity, RateLimit.tat <= now + self.tolerance)
            .values(tat=case((RateLimit.tat > now, RateLimit.tat), else_=now) + self.interval)
        )
        for _ in range(3):  # a first call races another gateway's first call at most once
            with self.db.session() as session:
                if session.connection().execute(spend).rowcount == 1:
                    return None
                tat = (
                    session.connection()
                    .execute(select(RateLimit.tat).where(RateLimit.identity == identity))
                    .scalar()
                )
            if tat is not None:
                return max(tat - self.tolerance - now, 0.001)
            try:
                with self.db.session() as session:
                    session.add(RateLimit(identity=identity, tat=now + self.interval))
                return None
            except IntegrityError:
                continue
        return self.interval  # pragma: no cover  (three lost races in a row)
