"""Calls per client token: a token bucket kept in the database, shared by every gateway.

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

from sqlalchemy import Float, bindparam, case, insert, select, update
from sqlalchemy.exc import IntegrityError

from foodcal.store import Database, RateLimit


class RateLimiter:
    def __init__(
        self,
        db: Database,
        per_minute: float,
        burst: int,
        clock: Callable[[], float] = time.time,
        names: tuple[str, str] = ("CLIENT_RATE_PER_MINUTE", "CLIENT_RATE_BURST"),
    ) -> None:
        """`names`: the settings that set this bucket, for the message a refused client reads."""
        self.db, self.clock, self.names = db, clock, names
        self.per_minute, self.burst = per_minute, burst
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self.tolerance = (burst - 1) * self.interval
        # Built once (every AnalyzeMeal of a client spends): a statement built per call costs more
        # CPU than the write.
        buckets, now = RateLimit.__table__, bindparam("now", type_=Float)
        self._spend = (
            update(buckets)
            .where(
                buckets.c.identity == bindparam("key"),
                buckets.c.tat <= bindparam("allowed_until", type_=Float),
            )
            .values(tat=case((buckets.c.tat > now, buckets.c.tat), else_=now) + self.interval)
        )
        self._tat = select(buckets.c.tat).where(buckets.c.identity == bindparam("key"))
        self._open = insert(buckets)

    def __str__(self) -> str:
        return f"{self.names[0]}={self.per_minute:g}, {self.names[1]}={self.burst}"

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def take(self, identity: str) -> float | None:
        """Spend one call of `identity`'s bucket: None when allowed, else the seconds to wait."""
        if not self.enabled:
            return None
        now = self.clock()
        spend = {"key": identity, "allowed_until": now + self.tolerance, "now": now}
        for _ in range(3):  # a first call races another gateway's first call at most once
            with self.db.transaction() as connection:
                if connection.execute(self._spend, spend).rowcount == 1:
                    return None
                tat = connection.execute(self._tat, {"key": identity}).scalar()
            if tat is not None:
                return max(tat - self.tolerance - now, 0.001)
            try:
                with self.db.transaction() as connection:
                    connection.execute(self._open, {"identity": identity, "tat": now + self.interval})
                return None
            except IntegrityError:
                continue
        return self.interval  # pragma: no cover  (three lost races in a row)
