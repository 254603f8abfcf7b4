"""A ChatGPT call that reached the API is paid: it is recorded (the call and the label cache)
whatever happens to its caller, and no two labeler replicas ask for the same photo at once.
Through real labeler gRPC servers and the OpenAI stub over HTTP."""

import asyncio

import grpc
import pytest
from sqlmodel import select

import labeler.__main__ as labeler_main
from foodcal.settings import SettingsError, load_settings
from foodcal.store import ChatGPTCall, LabelCache
from foodcal.v1 import labeler_pb2_grpc
from tests.conftest import INTERNAL_TOKEN, auth, start_service
from tests.fixtures_labeler import call, chatgpt_settings, request
from tests.openai_stub import GOOD_ANSWER, Reply, answer

SLOW_S = 1.5  # how long the stub takes to answer


def slow() -> Reply:
    return Reply(body=answer().body, delay_s=SLOW_S)


def recorded(db) -> tuple[list[ChatGPTCall], list[LabelCache]]:
    with db.session() as session:
        return list(session.exec(select(ChatGPTCall)).all()), list(session.exec(select(LabelCache)).all())


async def until_recorded(db, timeout_s: float = 10.0) -> list[ChatGPTCall]:
    for _ in range(int(timeout_s / 0.1)):
        calls, cached = recorded(db)
        if calls and cached:
            return calls
        await asyncio.sleep(0.1)
    raise AssertionError("the paid call was never recorded")


async def test_a_call_cut_by_its_callers_deadline_is_recorded_and_never_paid_again(labeler, stub, db):
    stub.reset(default=slow())
    client = await labeler()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.LabelMeal(request(), metadata=auth(INTERNAL_TOKEN), timeout=0.4)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    calls = await until_recorded(db)
    assert [(c.outcome, c.prompt_tokens) for c in calls] == [("labeled", 120)]
    again = await call(client, request())  # the queue asks again: the cache answers
    assert again.cached and again.label.nutrition.calories_kcal == GOOD_ANSWER["calories_kcal"]
    assert stub.calls == 1


async def test_a_call_in_flight_when_the_labeler_stops_is_recorded(tmp_path, stub, db, channel_to):
    stub.reset(default=slow())
    server = await start_service(labeler_main, chatgpt_settings(tmp_path, stub), db)
    client = labeler_pb2_grpc.LabelerServiceStub(channel_to(server.port))
    asking = asyncio.ensure_future(call(client, request()))
    for _ in range(50):  # until the stub has the request
        if stub.calls:
            break
        await asyncio.sleep(0.05)
    await server.stop(0)  # SIGTERM with no grace: the handler is cancelled
    with pytest.raises(grpc.aio.AioRpcError):
        await asyncio.wait_for(asking, 5)
    calls, cached = recorded(db)  # recorded before stop() returned
    assert len(calls) == 1 and len(cached) == 1


async def test_two_labeler_replicas_ask_once_for_the_same_photo(labeler, stub, db):
    stub.reset(default=slow())
    first, second = await labeler(), await labeler()  # two replicas on one database
    answers = await asyncio.gather(call(first, request()), call(second, request()))
    assert stub.calls == 1
    assert sorted(a.cached for a in answers) == [False, True]
    assert {a.label.nutrition.calories_kcal for a in answers} == {GOOD_ANSWER["calories_kcal"]}
    calls, _ = recorded(db)
    assert len(calls) == 1


def test_the_labelers_deadline_must_outlast_every_try_of_the_openai_call(tmp_path):
    with pytest.raises(
        SettingsError, match=r"LABELER_TIMEOUT_S: .*OPENAI_TIMEOUT_S x \(OPENAI_MAX_RETRIES \+ 1\)"
    ):
        load_settings(_env_file=None, openai_timeout_s=30, openai_max_retries=3, labeler_timeout_s=90)
    assert load_settings(_env_file=None).labeler_timeout_s >= 30 * 4  # the defaults agree
    load_settings(_env_file=None, openai_timeout_s=5, openai_max_retries=0, labeler_timeout_s=5)
