"""Issue 30, items 1 and 2: every client call is sized and rate-limited before any work, through a real
gateway server (no model server needed: these calls are refused before one would be asked)."""

import asyncio

import grpc
import pytest

from foodcal.domain.items import MAX_ITEMS, FoodItem
from foodcal.domain.notes import MAX_NOTE_CHARS, InvalidNote, clean_note
from foodcal.rpc.errors import details_of, error_info, retry_info
from foodcal.store import Database
from foodcal.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from tests.conftest import ADMIN_TOKEN, API_TOKEN, OTHER_CLIENT_TOKEN, auth, make_settings, start_service

NUTRITION = common_pb2.Nutrition(calories_kcal=500, proteins_g=20, fats_g=20, carbs_g=60)


@pytest.fixture
async def gateway(tmp_path):
    """`await gateway(**settings)`: a GatewayService stub on a gateway started alone."""
    import gateway.__main__ as gateway_main

    started = []

    async def start(**overrides):
        settings = make_settings(tmp_path, torchserve_endpoints=["127.0.0.1:9"], **overrides)
        db = Database(settings.database_url)
        db.migrate()
        server = await start_service(gateway_main, settings, db)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        started.append((server, channel, db))
        return gateway_pb2_grpc.GatewayServiceStub(channel)

    yield start
    for server, channel, db in started:
        await channel.close()
        await server.stop(0)
        db.dispose()


@pytest.fixture
def built(monkeypatch) -> list[str]:
    """The names of the items the gateway builds from a request (FoodItem.from_proto)."""
    names: list[str] = []
    real = FoodItem.from_proto.__func__

    def counting(cls, message):
        names.append(message.name)
        return real(cls, message)

    monkeypatch.setattr(FoodItem, "from_proto", classmethod(counting))
    return names


async def refused(call) -> tuple[grpc.StatusCode, str, float | None]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    status = details_of(raised.value)
    retry = retry_info(status)
    return raised.value.code(), error_info(status).reason, retry and retry.retry_delay.ToTimedelta().seconds


def correction(count: int, name: str = "rice") -> gateway_pb2.CorrectSampleRequest:
    item = common_pb2.FoodItem(name=name, grams=200, nutrition=NUTRITION)
    return gateway_pb2.CorrectSampleRequest(sample_id="no-such-sample", items=[item] * count)


async def test_too_many_items_are_refused_before_any_is_built_or_the_sample_is_looked_up(gateway, built):
    gw = await gateway()
    code, reason, _ = await refused(gw.CorrectSample(correction(MAX_ITEMS + 1), metadata=auth(API_TOKEN)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ITEMS")
    code, reason, _ = await refused(gw.CorrectSample(correction(1, "x" * 250), metadata=auth(API_TOKEN)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ITEMS")
    assert built == []
    code, reason, _ = await refused(gw.CorrectSample(correction(2), metadata=auth(API_TOKEN)))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "SAMPLE_NOT_FOUND")  # within limits: checked
    assert built == ["rice", "rice"]


@pytest.mark.parametrize(
    "method, request_",
    [
        ("CorrectSample", correction(200_000, "")),  # 0.72 s of building on the loop before
        ("CorrectSample", correction(20, "x" * 20_000)),
        ("GetSample", gateway_pb2.GetSampleRequest(sample_id="x" * 5000)),
        ("ListSamples", gateway_pb2.ListSamplesRequest(page_token="x" * 5000)),
    ],
    ids=["many-empty-items", "long-names", "long-sample-id", "long-page-token"],
)
async def test_a_request_over_its_rpcs_size_is_refused_before_it_is_parsed(gateway, built, method, request_):
    gw = await gateway()
    for token in (API_TOKEN, ADMIN_TOKEN):  # a size limit holds for admins too
        code, reason, _ = await refused(getattr(gw, method)(request_, metadata=auth(token)))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_TOO_LARGE")
    assert built == []


async def test_every_client_rpc_spends_the_clients_calls_bucket(gateway):
    gw = await gateway(client_call_rate_per_minute=1, client_call_burst=3)
    calls = [
        lambda token: gw.ListSamples(gateway_pb2.ListSamplesRequest(), metadata=auth(token)),
        lambda token: gw.GetSample(gateway_pb2.GetSampleRequest(sample_id="nope"), metadata=auth(token)),
        lambda token: gw.CorrectSample(correction(MAX_ITEMS + 1), metadata=auth(token)),
    ]
    for call in calls:  # the burst of 3, whatever each call's outcome
        try:
            await call(API_TOKEN)
        except grpc.aio.AioRpcError as error:
            assert error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
    for call in calls:
        code, reason, delay = await refused(call(API_TOKEN))
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED") and delay > 50
    await calls[0](OTHER_CLIENT_TOKEN)  # another client has its own bucket
    for _ in range(5):  # admins are not limited
        await calls[0](ADMIN_TOKEN)


def test_a_note_too_long_as_sent_is_refused_before_it_is_cleaned(monkeypatch):
    import foodcal.domain.notes

    assert clean_note(" " * MAX_NOTE_CHARS * 2) == ""  # spaces up to twice the limit clean away
    monkeypatch.setattr(foodcal.domain.notes, "unicodedata", None)  # cleaning would fail on it
    with pytest.raises(InvalidNote, match="as sent"):
        clean_note(" " * (MAX_NOTE_CHARS * 2 + 1))


async def test_analyze_meal_refuses_a_long_note_before_any_work(gateway, monkeypatch):
    """Not the rate limiter's spend, not the request id's claim, not the photo: nothing."""
    gw = await gateway()
    hops: list[str] = []
    real = asyncio.to_thread

    def counting(function, *args, **kwargs):
        hops.append(function.__name__)
        return real(function, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counting)
    for request_id in ("", "meal-1"):
        request = gateway_pb2.AnalyzeMealRequest(image=b"x", note=" " * 100_000, request_id=request_id)
        code, reason, _ = await refused(gw.AnalyzeMeal(request, metadata=auth(API_TOKEN)))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "NOTE_TOO_LONG")
    assert hops == []
