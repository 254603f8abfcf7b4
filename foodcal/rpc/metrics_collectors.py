"""Gauges that describe the database, read from it at scrape time.

They are right whichever replica changed the rows: the label queue (gateway) and the served
nutrition version (trainer). `foodcal.rpc.metrics.instrument` registers them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlmodel import select

from foodcal.store import Database, LabelStatus, ModelVersionRow, RunStatus, Sample, TrainingRunRow

log = logging.getLogger(__name__)


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class LabelQueueCollector(Collector):
    """`foodcal_label_queue_depth` and the age of the oldest pending label (gateway)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            with self.db.session() as session:
                count, oldest = session.exec(
                    select(func.count(), func.min(Sample.created_at)).where(
                        Sample.label_status == LabelStatus.PENDING
                    )
                ).one()
        except Exception as error:  # a scrape must not fail because the database is away
            log.warning("label queue metrics unavailable: %s", error)
            return
        age = (datetime.now(UTC) - aware(oldest)).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily("foodcal_label_queue_depth", "Samples waiting for a ChatGPT label.", count)
        yield GaugeMetricFamily(
            "foodcal_label_queue_oldest_pending_age_seconds",
            "Age of the oldest sample waiting for a label (0 when none waits).",
            max(age, 0.0),
        )


class ServedVersionCollector(Collector):
    """`foodcal_model_served_version`: the nutrition version the database marks as served (trainer)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            with self.db.session() as session:
                version = session.exec(select(ModelVersionRow.version).where(ModelVersionRow.served)).first()
                running = session.exec(
                    select(func.count()).where(TrainingRunRow.status == RunStatus.RUNNING)
                ).one()
        except Exception as error:
            log.warning("model metrics unavailable: %s", error)
            return
        if version is not None:
            yield GaugeMetricFamily(
                "foodcal_model_served_version", "The nutrition model version TorchServe serves.", version
            )
        yield GaugeMetricFamily("foodcal_training_runs_in_progress", "Training runs now running.", running)
