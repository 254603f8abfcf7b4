"""Metrics and log pieces tested in-process: the JSON log formatter and the label queue gauges."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest

from foodcal.rpc import logs, metrics
from foodcal.store import LabelStatus, Sample
from foodcal.store.tables import utcnow

pytestmark = pytest.mark.torchserve


# -- in-process pieces ------------------------------------------------------------------------------


def test_json_formatter_writes_one_object_per_line_with_the_bound_ids():
    formatter = logs.JsonFormatter("gateway")
    logger = logging.getLogger("foodcal.test")

    def record(message: str, *args, exc_info=None) -> dict:
        line = formatter.format(
            logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, args, exc_info)
        )
        assert "\n" not in line
        return json.loads(line)

    token = logs.REQUEST_ID.set("req-1")
    try:
        entry = record("sample %s: %s", "abc", "multi\nline")
        assert entry["message"] == "sample abc: multi\nline" and entry["request_id"] == "req-1"
        assert entry["service"] == "gateway" and entry["level"] == "INFO" and "run_id" not in entry
    finally:
        logs.REQUEST_ID.reset(token)
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        entry = record("failed", exc_info=sys.exc_info())
    assert "ValueError: boom" in entry["exception"] and "request_id" not in entry


def test_label_queue_gauges_count_only_pending_samples(sqlite_db):
    now = utcnow()
    with sqlite_db.session() as session:
        for index, (status, age) in enumerate(
            [(LabelStatus.PENDING, 30), (LabelStatus.PENDING, 5), (LabelStatus.LABELED, 300)]
        ):
            session.add(
                Sample(
                    image_sha256=f"{index:064x}",
                    image_path="unused",
                    label_status=status,
                    created_at=now - timedelta(seconds=age),
                )
            )
    gauges = {
        family.name: family.samples[0].value for family in metrics.LabelQueueCollector(sqlite_db).collect()
    }
    assert gauges["foodcal_label_queue_depth"] == 2
    assert 30 <= gauges["foodcal_label_queue_oldest_pending_age_seconds"] < 40
