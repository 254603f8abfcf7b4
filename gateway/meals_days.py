"""GetDailyTotals: what a person ate per day, in their own time zone.

A day is a local calendar day (zoneinfo): 00:00 to 24:00 where the person lives, 23 or 25 hours
on the days clocks change. Each plate counts the numbers it showed (gateway/shown.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import load_only
from sqlmodel import Session, col, select

from foodcal.domain.convert import nutrition_proto
from foodcal.store import Sample
from foodcal.store.tables import utcnow
from foodcal.v1 import gateway_pb2
from gateway.shown import CORRECTION, shown

MAX_DAYS = 366
MAX_ZONE_CHARS = 64  # the longest IANA name is 32

# What a day's sum reads: no embeddings or probabilities (kilobytes per row).
_COLUMNS = [
    Sample.created_at, Sample.shown_source, Sample.pred_model_version,
    *(getattr(Sample, f"{p}_{n}") for p in ("pred", "label", "correction")
      for n in ("calories_kcal", "proteins_g", "fats_g", "carbs_g")),
]  # fmt: skip


class InvalidDays(ValueError):
    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Days:
    first: date
    last: date
    zone: ZoneInfo

    def start(self, day: date) -> datetime:
        """The UTC instant `day` begins where the person is."""
        return datetime.combine(day, datetime.min.time(), self.zone).astimezone(UTC)

    def each(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]


def zone_of(name: str) -> ZoneInfo:
    if len(name) > MAX_ZONE_CHARS:
        raise InvalidDays(f"time_zone is at most {MAX_ZONE_CHARS} characters", "INVALID_TIME_ZONE")
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):  # ValueError: a path, not a name ("../etc")
        raise InvalidDays(
            f"time_zone {name!r} is not an IANA time zone (e.g. Europe/Berlin, America/New_York, UTC)",
            "INVALID_TIME_ZONE",
        ) from None


def _date(text: str, field: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise InvalidDays(
            f"{field} must be a date as YYYY-MM-DD (got {text[:20]!r})", "INVALID_DATE"
        ) from None


def days_of(request: gateway_pb2.GetDailyTotalsRequest, now: datetime | None = None) -> Days:
    """The request's days; an empty `from_date` is today where the person is."""
    zone = zone_of(request.time_zone)
    first = (
        _date(request.from_date, "from_date")
        if request.from_date
        else (now or utcnow()).astimezone(zone).date()
    )
    last = _date(request.to_date, "to_date") if request.to_date else first
    if last < first:
        raise InvalidDays(f"to_date {last} is before from_date {first}", "INVALID_DATE_RANGE")
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidDays(
            f"a range is at most {MAX_DAYS} days (got {(last - first).days + 1})", "INVALID_DATE_RANGE"
        )
    return Days(first, last, zone)


def daily_totals(session: Session, days: Days, owner: str | None) -> gateway_pb2.GetDailyTotalsResponse:
    start, end = days.start(days.first), days.start(days.last + timedelta(days=1))
    query = select(Sample).options(load_only(*_COLUMNS))
    query = query.where(col(Sample.created_at) >= start, col(Sample.created_at) < end)
    if owner is not None:
        query = query.where(Sample.owner == owner)
    sums = {day: [0.0, 0.0, 0.0, 0.0, 0, 0] for day in days.each()}
    for sample in session.exec(query):
        values, source = shown(sample)
        day = sums[sample.created_at.astimezone(days.zone).date()]
        for index, value in enumerate(values or ()):
            day[index] += value
        day[4] += 1
        day[5] += source == CORRECTION
    rows = [
        gateway_pb2.DayTotals(
            date=day.isoformat(), nutrition=nutrition_proto(s[:4]), plates=s[4], corrected_plates=s[5]
        )
        for day, s in sums.items()
    ]
    total = [sum(s[i] for s in sums.values()) for i in range(4)]
    return gateway_pb2.GetDailyTotalsResponse(
        days=rows,
        time_zone=days.zone.key,
        total=nutrition_proto(total),
        plates=sum(s[4] for s in sums.values()),
    )
