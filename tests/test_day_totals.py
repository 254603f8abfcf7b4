"""GetDailyTotals and ExportSamples through the real gateway: a person's days in their own time
zone, the numbers they were shown (a correction wins), and their data back as JSON lines."""

import asyncio
import io
import json
from contextlib import redirect_stdout
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import grpc
import pytest
from sqlmodel import select

from foodcal.cli import main as cli
from foodcal.rpc.errors import details_of, error_info
from foodcal.store import Sample
from foodcal.v1 import common_pb2, gateway_pb2
from gateway.auth import identity_of
from tests.conftest import ADMIN_TOKEN, API_TOKEN, OTHER_CLIENT_TOKEN, auth, photo
from tests.test_access import failure

CLIENT, OTHER, ADMIN = auth(API_TOKEN), auth(OTHER_CLIENT_TOKEN), auth(ADMIN_TOKEN)
FIXED = common_pb2.Nutrition(calories_kcal=700, proteins_g=30, fats_g=25, carbs_g=80)


async def analyze(app, shade: int, metadata=CLIENT, when: datetime | None = None):
    answer = await app.gateway.AnalyzeMeal(
        gateway_pb2.AnalyzeMealRequest(image=photo((shade, 40, 90)), note=f"plate {shade}"),
        metadata=metadata,
        timeout=60,
    )
    if when is not None:  # as if sent then
        with app.db.session() as session:
            sample = session.get(Sample, answer.sample_id)
            sample.created_at = when
            session.add(sample)
    return answer


def kcal(message) -> float:
    return round(message.calories_kcal, 3)


async def test_days_are_local_days_and_a_correction_wins_over_what_was_shown(system):
    app = await system(services=("gateway",), use_chatgpt=False)
    gw = app.gateway
    # New York, 9-10 March 2024: clocks go forward on the 10th (UTC-5, then UTC-4)
    late_on_9th = await analyze(app, 1, when=datetime(2024, 3, 10, 4, 30, tzinfo=UTC))  # 23:30 EST
    early_10th = await analyze(app, 2, when=datetime(2024, 3, 10, 5, 30, tzinfo=UTC))  # 00:30 EST
    end_10th = await analyze(app, 3, when=datetime(2024, 3, 11, 3, 30, tzinfo=UTC))  # 23:30 EDT
    await analyze(app, 4, when=datetime(2024, 3, 11, 4, 30, tzinfo=UTC))  # 00:30 EDT on the 11th
    await analyze(app, 5, metadata=OTHER, when=datetime(2024, 3, 10, 12, tzinfo=UTC))  # not mine
    await gw.CorrectSample(
        gateway_pb2.CorrectSampleRequest(sample_id=end_10th.sample_id, nutrition=FIXED), metadata=CLIENT
    )

    request = gateway_pb2.GetDailyTotalsRequest(
        from_date="2024-03-09", to_date="2024-03-10", time_zone="America/New_York"
    )
    days = await gw.GetDailyTotals(request, metadata=CLIENT)
    assert days.time_zone == "America/New_York"
    assert [(d.date, d.plates, d.corrected_plates) for d in days.days] == [
        ("2024-03-09", 1, 0),
        ("2024-03-10", 2, 1),
    ]
    assert kcal(days.days[0].nutrition) == kcal(late_on_9th.nutrition)
    assert kcal(days.days[1].nutrition) == round(early_10th.nutrition.calories_kcal + 700, 3)
    assert days.days[1].nutrition.proteins_g == pytest.approx(early_10th.nutrition.proteins_g + 30)
    assert days.plates == 3
    assert days.total.calories_kcal == pytest.approx(sum(d.nutrition.calories_kcal for d in days.days))

    # in UTC the same plates fall on other days; a day without plates is there, with zeros
    utc = await gw.GetDailyTotals(
        gateway_pb2.GetDailyTotalsRequest(from_date="2024-03-09", to_date="2024-03-11"), metadata=CLIENT
    )
    assert [(d.date, d.plates) for d in utc.days] == [("2024-03-09", 0), ("2024-03-10", 2), ("2024-03-11", 2)]
    assert utc.time_zone == "UTC" and utc.days[0].nutrition.calories_kcal == 0

    # admins see everyone's, or one client's
    every = await gw.GetDailyTotals(request, metadata=ADMIN)
    assert [d.plates for d in every.days] == [1, 3]
    theirs = await gw.GetDailyTotals(
        gateway_pb2.GetDailyTotalsRequest(
            from_date="2024-03-10", time_zone="America/New_York", owner=identity_of(OTHER_CLIENT_TOKEN)
        ),
        metadata=ADMIN,
    )
    assert [d.plates for d in theirs.days] == [1]

    # today, by default: a plate sent now
    await analyze(app, 6)
    today = await gw.GetDailyTotals(
        gateway_pb2.GetDailyTotalsRequest(time_zone="Asia/Tokyo"), metadata=CLIENT
    )
    assert len(today.days) == 1 and today.days[0].plates == 1
    assert today.days[0].date == datetime.now(ZoneInfo("Asia/Tokyo")).date().isoformat()


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"time_zone": "Mars/Olympus_Mons"}, "INVALID_TIME_ZONE"),
        ({"time_zone": "../../etc/passwd"}, "INVALID_TIME_ZONE"),
        ({"from_date": "2024-13-01"}, "INVALID_DATE"),
        ({"from_date": "yesterday"}, "INVALID_DATE"),
        ({"from_date": "2024-03-10", "to_date": "2024-03-09"}, "INVALID_DATE_RANGE"),
        ({"from_date": "2023-01-01", "to_date": "2024-12-31"}, "INVALID_DATE_RANGE"),
    ],
)
async def test_a_bad_range_or_time_zone_is_invalid_argument_that_says_why(system, fields, reason):
    app = await system(services=("gateway",), use_chatgpt=False)
    error = await failure(
        lambda: app.gateway.GetDailyTotals(gateway_pb2.GetDailyTotalsRequest(**fields), metadata=CLIENT)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert error_info(details_of(error)).reason == reason


async def test_a_client_cannot_read_another_clients_days(system):
    app = await system(services=("gateway",), use_chatgpt=False)
    request = gateway_pb2.GetDailyTotalsRequest(owner=identity_of(OTHER_CLIENT_TOKEN))
    error = await failure(lambda: app.gateway.GetDailyTotals(request, metadata=CLIENT))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "own days" in error.details()
    mine = gateway_pb2.GetDailyTotalsRequest(owner=identity_of(API_TOKEN))  # naming oneself is fine
    assert (await app.gateway.GetDailyTotals(mine, metadata=CLIENT)).plates == 0


async def test_export_streams_only_the_callers_samples_oldest_first_as_json_lines(system, monkeypatch):
    import gateway.export

    monkeypatch.setattr(gateway.export, "PAGE_SIZE", 2)  # several pages from a few samples
    app = await system(services=("gateway",), use_chatgpt=False)
    first = await analyze(app, 1, when=datetime(2024, 1, 1, 8, tzinfo=UTC))
    second = await analyze(app, 2, when=datetime(2024, 1, 1, 8, tzinfo=UTC))  # same instant: by id
    third = await analyze(app, 3, when=datetime(2024, 1, 2, 8, tzinfo=UTC))
    await analyze(app, 4, metadata=OTHER)
    item = common_pb2.FoodItem(name="rice", grams=150, nutrition=FIXED)
    await app.gateway.CorrectSample(
        gateway_pb2.CorrectSampleRequest(sample_id=third.sample_id, items=[item]), metadata=CLIENT
    )

    records = [
        r async for r in app.gateway.ExportSamples(gateway_pb2.ExportSamplesRequest(), metadata=CLIENT)
    ]
    same_instant = sorted([first.sample_id, second.sample_id])
    assert [r.sample_id for r in records] == [*same_instant, third.sample_id]
    by_id = {r.sample_id: r for r in records}
    plain = by_id[first.sample_id]
    assert plain.nutrition == first.nutrition and plain.source == first.source
    assert plain.own_prediction == first.own_prediction and not plain.HasField("correction")
    assert plain.note == "plate 1" and plain.dish == first.dishes[0].label
    assert plain.owner == identity_of(API_TOKEN) and not plain.photo_removed
    corrected = by_id[third.sample_id]
    assert corrected.source == common_pb2.NUTRITION_SOURCE_CORRECTION and corrected.nutrition == FIXED
    assert corrected.correction == FIXED and [i.name for i in corrected.items] == ["rice"]
    every = [r async for r in app.gateway.ExportSamples(gateway_pb2.ExportSamplesRequest(), metadata=ADMIN)]
    assert len(every) == 4

    # the CLI writes one JSON object a line
    port = app.servers["gateway"].port
    monkeypatch.setenv("FOODCAL_TOKEN", API_TOKEN)
    out = io.StringIO()

    def export() -> int:
        with redirect_stdout(out):
            return cli.main(["--address", f"127.0.0.1:{port}", "export"])

    assert await asyncio.to_thread(export) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["sample_id"] for line in lines] == [r.sample_id for r in records]
    assert lines[-1]["nutrition"]["calories_kcal"] == 700 and lines[-1]["items"][0]["name"] == "rice"
    assert lines[0]["created_at"].startswith("2024-01-01T08:00:00")


async def test_new_rpcs_have_size_limits_and_spend_the_calls_bucket(system):
    app = await system(
        services=("gateway",), use_chatgpt=False, client_call_burst=2, client_call_rate_per_minute=1
    )
    gw = app.gateway
    big = gateway_pb2.GetDailyTotalsRequest(time_zone="x" * 2000)
    error = await failure(lambda: gw.GetDailyTotals(big, metadata=CLIENT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(details_of(error)).reason == "REQUEST_TOO_LARGE"
    error = await failure(
        lambda: gw.DeleteSample(gateway_pb2.DeleteSampleRequest(sample_id="a" * 2000), metadata=CLIENT)
    )
    assert error_info(details_of(error)).reason == "REQUEST_TOO_LARGE"
    [r async for r in gw.ExportSamples(gateway_pb2.ExportSamplesRequest(), metadata=CLIENT)]
    await gw.GetDailyTotals(gateway_pb2.GetDailyTotalsRequest(), metadata=CLIENT)
    error = await failure(lambda: gw.ExportSamples(gateway_pb2.ExportSamplesRequest(), metadata=CLIENT))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # the stream spends the bucket too
    assert (await gw.GetDailyTotals(gateway_pb2.GetDailyTotalsRequest(), metadata=ADMIN)).plates == 0
    with app.db.session() as session:
        assert session.exec(select(Sample)).all() == []
