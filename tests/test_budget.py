"""CHATGPT_DAILY_BUDGET_USD: at the limit labels wait as pending, then go after midnight UTC."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from foodcal.store import ChatGPTCall, LabelStatus, Sample
from foodcal.v1 import common_pb2, gateway_pb2
from gateway.budget import next_midnight, spent_today, start_of_day
from tests.conftest import auth
from tests.test_gateway import analyze


@pytest.fixture(autouse=True)
def read_spend_every_time(monkeypatch):
    monkeypatch.setattr("gateway.budget.REFRESH_S", 0.0)


def test_the_day_is_utc_midnight_to_midnight(sqlite_db):
    now = datetime(2026, 11, 29, 23, 59, 30, tzinfo=UTC)
    assert start_of_day(now) == datetime(2026, 11, 29, tzinfo=UTC)
    assert next_midnight(now) == datetime(2026, 11, 30, tzinfo=UTC)
    with sqlite_db.session() as session:
        session.add(ChatGPTCall(image_sha256="a", outcome="labeled", cost_usd=0.5, created_at=now))
        session.add(ChatGPTCall(image_sha256="b", outcome="labeled", cost_usd=0.25, created_at=now))
        session.add(
            ChatGPTCall(image_sha256="c", outcome="labeled", cost_usd=9.0, created_at=now - timedelta(days=1))
        )
    with sqlite_db.session() as session:
        assert spent_today(session, now) == pytest.approx(0.75)


async def test_a_spent_budget_holds_labels_pending_and_releases_them_after_midnight(system, openai_stub):
    app = await system(chatgpt_daily_budget_usd=0.01)
    with app.db.session() as session:
        session.add(ChatGPTCall(image_sha256="x", outcome="labeled", cost_usd=0.02))  # over today's budget
    answer = await analyze(app)
    assert answer.label_status == common_pb2.LABEL_STATUS_PENDING and openai_stub.calls == 0
    assert "budget is spent" in answer.label_policy_reason
    with app.db.session() as session:
        held = session.get(Sample, answer.sample_id)
        assert held.label_next_attempt_at.replace(tzinfo=UTC) == next_midnight(datetime.now(UTC))
    stats = await app.gateway.GetStats(gateway_pb2.GetStatsRequest(), metadata=auth())
    assert stats.chatgpt_spent_today_usd == pytest.approx(0.02) and stats.chatgpt_budget_left_usd == 0
    await asyncio.sleep(1.0)  # the queue polls every 0.1 s: it must not call while the budget is spent
    assert openai_stub.calls == 0

    # Midnight: yesterday's spend no longer counts and the held label is due.
    with app.db.session() as session:
        for call in session.exec(select(ChatGPTCall)).all():
            call.created_at = call.created_at - timedelta(days=1)
            session.add(call)
        held = session.get(Sample, answer.sample_id)
        held.label_next_attempt_at = datetime.now(UTC)
        session.add(held)
    for _ in range(200):
        with app.db.session() as session:
            if session.get(Sample, answer.sample_id).label_status == LabelStatus.LABELED:
                break
        await asyncio.sleep(0.1)
    assert openai_stub.calls == 1
    with app.db.session() as session:
        assert session.get(Sample, answer.sample_id).label_status == LabelStatus.LABELED
