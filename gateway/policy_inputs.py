"""What the label policy and the ranges need from the database, read rarely: each served version's
calibration and how many labels each dish has. Both change only when a run ends or labels arrive,
while every AnalyzeMeal needs them: kept for a few seconds, read in a thread."""

from __future__ import annotations

from sqlmodel import col, func, or_, select

from foodcal.domain.calibration import Calibration
from foodcal.store import Database, LabelStatus, ModelVersionRow, Sample
from gateway.recent import Recent

REFRESH_S = 10.0


class Calibrations:
    def __init__(self, db: Database, refresh_s: float | None = None) -> None:
        self.db = db
        self._recent = Recent(REFRESH_S if refresh_s is None else refresh_s)

    async def of_version(self, version: int) -> Calibration:
        return await self._recent.get(("version", version), lambda: self._read_version(version))

    async def dish_labels(self, dish: str) -> int:
        return (await self._recent.get("dish labels", self._read_dish_labels)).get(dish, 0)

    def _read_version(self, version: int) -> Calibration:
        with self.db.session() as session:
            row = session.get(ModelVersionRow, version)
        return Calibration.from_dict(row.calibration if row is not None else None)

    def _read_dish_labels(self) -> dict[str, int]:
        """Labels asked for or given per top-1 dish: labelled, corrected, or still on their way."""
        wanted = or_(
            col(Sample.label_status).in_([LabelStatus.LABELED, LabelStatus.PENDING]),
            col(Sample.corrected_at).is_not(None),
        )
        with self.db.session() as session:
            rows = session.exec(
                select(Sample.top1_dish, func.count()).where(wanted).group_by(Sample.top1_dish)
            )
            return {dish: count for dish, count in rows}
