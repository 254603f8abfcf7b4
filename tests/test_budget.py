"""CHATGPT_DAILY_BUDGET_USD: at the limit labels wait as pending, then go after midnight UTC."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from foodcal.store import ChatGPTCall, LabelJob, LabelStatus
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
    before = datetime.now(UTC)
    answer = await analyze(app)
    after = datetime.now(UTC)
    assert answer.label_status == common_pb2.LABEL_STATUS_PENDING and openai_stub.calls == 0
    assert "budget is spent" in answer.label_policy_reason
    with app.db.session() as session:
        held = session.get(LabelJob, answer.sample_id)
        # the next midnight of the moment it was held: either side of one, should the test cross it
        assert held.next_attempt_at.replace(tzinfo=UTC) in {next_midnight(before), next_midnight(after)}
    stats = await app.gateway.GetStats(gateway_pb2.GetStatsRequest(), metadata=auth())
    assert stats.chatgpt_spent_today_usd == pytest.approx(0.02) and stats.chatgpt_budget_left_usd == 0
    await asyncio.sleep(1.0)  # the queue polls every 0.1 s: it must not call while the budget is spent
    assert openai_stub.calls == 0

    # Midnight: yesterday's spend no longer counts and the held label is due.
    with app.db.session() as session:
        for call in session.exec(select(ChatGPTCall)).all():
            call.created_at = call.created_at - timedelta(days=1)
            session.add(call)
        held = session.get(LabelJob, answer.sample_id)
        held.next_attempt_at = datetime.now(UTC)
        session.add(held)
    for _ in range(200):
        with app.db.session() as session:
            if session.get(LabelJob, answer.sample_id).status == LabelStatus.LABELED:
                break
        await asyncio.sleep(0.1)
    assert openai_stub.calls == 1
    with app.db.session() as session:
        assert session.get(LabelJob, answer.sample_id).status == LabelStatus.LABELED


async def test_a_budget_with_a_model_of_unknown_price_refuses_to_start_unless_priced(tmp_path, stub):
    """A model missing from the price table costs 0 as far as we knew: the budget never bit. The
    labeler refuses: it holds the key and the prices, and records what each call cost."""
    import labeler.__main__ as labeler_main
    from foodcal.settings import SettingsError
    from foodcal.store import Database
    from labeler.chatgpt import ChatGPT
    from tests.conftest import photo
    from tests.fixtures_labeler import chatgpt_settings

    unpriced = chatgpt_settings(tmp_path, stub, openai_model="o4-mini", chatgpt_daily_budget_usd=5.0)
    db = Database(unpriced.database_url)
    with pytest.raises(SettingsError, match=r"BUDGET_USD.*o4-mini.*OPENAI_INPUT_USD_PER_MILLION"):
        labeler_main.build(unpriced, db)
    priced = chatgpt_settings(
        tmp_path, stub, openai_model="o4-mini", chatgpt_daily_budget_usd=5.0,
        openai_input_usd_per_million=1.25, openai_output_usd_per_million=10.0,
    )  # fmt: skip
    spec = labeler_main.build(priced, db)
    await spec.on_stop()
    db.dispose()
    client = ChatGPT(priced)  # the labeler records the cost at those prices
    try:
        usage = (await client.ask(photo(), [("pizza", 0.9)])).usage
    finally:
        await client.close()
    assert usage.cost_usd == pytest.approx((120 * 1.25 + 40 * 10.0) / 1e6)
