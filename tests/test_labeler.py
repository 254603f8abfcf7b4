"""The labeler against a local OpenAI-compatible server, through real HTTP and real gRPC."""

import time

import grpc
import pytest
from sqlmodel import select

import labeler.__main__ as labeler_main
from foodcal.domain.nutrition import NUTRIENTS
from foodcal.store import ChatGPTCall
from foodcal.v1 import common_pb2, labeler_pb2, labeler_pb2_grpc
from labeler.service import ERROR_METADATA_KEY
from tests.conftest import OPENAI_KEY, make_settings, photo, start_service
from tests.fixtures_labeler import call, request
from tests.openai_stub import Reply, answer, completion, error


async def test_good_answer_returns_label_usage_and_cost(labeler, stub, db):
    client = await labeler()
    response = await call(client, request())
    label = response.label
    assert label.source == common_pb2.NUTRITION_SOURCE_CHATGPT
    assert (label.nutrition.calories_kcal, label.nutrition.proteins_g) == (650.0, 27.0)
    assert label.portion_g == 250.0 and label.confidence == 0.8 and label.model == "gpt-4o-mini"
    assert response.usage.prompt_tokens == 120 and response.usage.completion_tokens == 40
    assert response.usage.estimated_cost_usd == pytest.approx((120 * 0.15 + 40 * 0.60) / 1e6)
    assert not response.cached and stub.calls == 1 and not stub.problems
    sent = stub.requests[0]
    assert "pizza (60%)" in sent["messages"][1]["content"][0]["text"]  # top-3 hint sent
    assert "ravioli" in sent["messages"][1]["content"][0]["text"]
    with db.session() as session:
        calls = session.exec(select(ChatGPTCall)).all()
    assert [(c.outcome, c.prompt_tokens) for c in calls] == [("labeled", 120)]


async def test_same_photo_again_is_answered_from_cache_without_paying(labeler, stub):
    client = await labeler()
    first = await call(client, request())
    second = await call(client, request())
    assert stub.calls == 1
    assert second.cached and not first.cached
    assert second.usage.total_tokens == 0
    assert second.label.nutrition == first.label.nutrition


async def test_rate_limit_then_success_is_retried_with_backoff(labeler, stub):
    stub.reset(error(429, "slow down"), answer())
    client = await labeler()
    response = await call(client, request())
    assert response.label.nutrition.calories_kcal == 650.0
    assert stub.calls == 2
    assert stub.times[1] - stub.times[0] >= 0.3  # the SDK backed off before retrying


async def test_server_errors_until_retries_run_out(labeler, stub):
    stub.reset(default=error(500, "boom"))
    client = await labeler(openai_max_retries=2)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(client, request())
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert raised.value.details().startswith("unavailable:")
    assert dict(raised.value.trailing_metadata())[ERROR_METADATA_KEY] == "unavailable"
    assert stub.calls == 3  # one call and two retries


async def test_rate_limited_until_retries_run_out_keeps_the_reason(labeler, stub):
    stub.reset(default=error(429, "quota"))
    client = await labeler(openai_max_retries=1)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(client, request())
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert raised.value.details().startswith("rate_limited:")
    assert stub.calls == 2


async def test_hang_past_the_timeout_is_a_timeout(labeler, stub):
    stub.reset(default=Reply(delay_s=3.0))
    client = await labeler(openai_timeout_s=0.5, openai_max_retries=1)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(client, request())
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert raised.value.details().startswith("timeout:")
    assert stub.calls == 2
    assert time.monotonic() - started < 3.0  # gave up on its own deadline, not the server's


async def test_bad_api_key_fails_at_once_without_retries(labeler, stub):
    client = await labeler(openai_api_key="sk-wrong", openai_max_retries=3)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(client, request())
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.details().startswith("auth_failed:")
    assert "sk-wrong" not in raised.value.details()
    assert stub.calls == 1


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(body=completion("{not json")), "not valid JSON"),
        (answer(calories_kcal=-100.0), "calories_kcal=-100"),
        (answer(proteins_g=9000.0), "proteins_g=9000"),
        (answer(portion_g=100.0, carbs_g=150.0), "more than the whole portion"),
        (Reply(body=completion('{"dish": "soup"}')), "lacks"),
        (answer(fats_g="lots"), "not a finite number"),
        (answer(items="pizza"), "items must be a list"),
        (answer(items=[{"name": "crust", "grams": -5, **dict.fromkeys(NUTRIENTS, 1.0)}]), "grams=-5"),
        (answer(items=[{"name": "crust", "grams": 100.0}]), "lacks a number"),
    ],
)
async def test_malformed_or_absurd_answers_are_errors_never_labels(labeler, stub, db, reply, reason):
    stub.reset(reply)
    client = await labeler()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(client, request())
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert raised.value.details().startswith("invalid_answer:")
    assert reason in raised.value.details()
    with db.session() as session:  # paid for, so counted; but nothing cached as a label
        assert [c.outcome for c in session.exec(select(ChatGPTCall)).all()] == ["invalid_answer"]


async def test_refusal_is_an_explicit_rejection_without_numbers(labeler, stub):
    stub.reset(Reply(body=completion(None, refusal="I can't help with that.")))
    client = await labeler()
    response = await call(client, request())
    assert response.rejected and response.rejection_reason.startswith("refused:")
    assert not response.label.HasField("nutrition")


async def test_not_food_is_recorded_not_invented_into_numbers(labeler, stub):
    stub.reset(
        answer(is_food=False, dish="a laptop", calories_kcal=0.0, proteins_g=0.0, fats_g=0.0, carbs_g=0.0)
    )
    client = await labeler()
    response = await call(client, request())
    assert response.rejected and response.rejection_reason.startswith("not_food")
    assert not response.label.HasField("nutrition")
    again = await call(client, request())  # a rejection is cached too: never paid twice
    assert again.cached and again.rejected and stub.calls == 1


async def test_calorie_mismatch_is_flagged_in_the_label(labeler, stub):
    stub.reset(answer(calories_kcal=1500.0))  # macros say ~644 kcal
    client = await labeler()
    response = await call(client, request())
    assert "calorie_mismatch" in response.label.flags


async def test_offline_answers_from_reference_table_with_top1_dish(tmp_path, stub, db, channel_to):
    settings = make_settings(tmp_path, use_chatgpt=True, openai_api_key="")  # no key: offline
    server = await start_service(labeler_main, settings, db)
    try:
        client = labeler_pb2_grpc.LabelerServiceStub(channel_to(server.port))
        response = await call(client, request(hints=(("hamburger", 0.9),)))
        assert response.label.source == common_pb2.NUTRITION_SOURCE_REFERENCE
        assert response.label.dish == "hamburger"
        assert response.label.nutrition.calories_kcal > 0
        assert stub.calls == 0
        assert not response.label.flags and not response.label.items
        noted = await call(client, request(hints=(("hamburger", 0.9),), note="no bun"))
        assert list(noted.label.flags) == ["note_not_used"]  # the table cannot read it: said so
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(client, request(hints=()))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.stop(0)


async def test_not_an_image_is_invalid_argument(labeler, stub):
    client = await labeler()
    for data in (b"", b"hello world"):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(client, labeler_pb2.LabelMealRequest(image=data))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stub.calls == 0


async def test_sent_photo_is_downscaled_jpeg_without_exif(labeler, stub):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0110] = "SecretCam"  # camera model
    client = await labeler()
    await call(client, request(image=photo(size=(3000, 2000), exif=exif)))
    assert not stub.problems  # the stub refuses EXIF, non-JPEG and oversize images


@pytest.mark.parametrize("model", ["gpt-5-mini", "o4-mini"])
async def test_reasoning_model_label_succeeds(labeler, stub, model):
    client = await labeler(openai_model=model)
    response = await call(client, request())
    assert response.label.nutrition.calories_kcal == 650.0 and response.label.model == model
    assert not stub.problems
    (sent,) = stub.requests
    assert "max_tokens" not in sent and "temperature" not in sent
    assert sent["max_completion_tokens"] >= 2000  # room for the reasoning tokens before the answer


async def test_chat_model_gets_temperature_zero_and_max_completion_tokens(labeler, stub):
    client = await labeler(openai_model="gpt-4o-mini")
    await call(client, request())
    (sent,) = stub.requests
    assert sent["temperature"] == 0 and "max_tokens" not in sent and sent["max_completion_tokens"] > 0


async def test_an_answer_cut_off_at_the_token_limit_is_named_as_such(labeler, stub):
    cut = completion(None, model="gpt-5-mini")
    cut["choices"][0]["finish_reason"] = "length"
    stub.reset(Reply(body=cut))
    client = await labeler(openai_model="gpt-5-mini")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(client, request())
    assert raised.value.details().startswith("invalid_answer:") and "token limit" in raised.value.details()


async def test_the_stub_refuses_what_the_real_api_refuses(stub):
    """The stub is only worth testing against if it is as strict as OpenAI; the shape is OpenAI's."""
    import openai

    async with openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=stub.base_url, max_retries=0) as client:
        refused = {
            "max_tokens": {"model": "gpt-5-mini", "max_tokens": 300},
            "temperature": {"model": "o4-mini", "temperature": 0},
            None: {"model": "gpt-4o-mini", "extra_body": {"frobnicate": True}},
        }
        for param, kwargs in refused.items():
            with pytest.raises(openai.BadRequestError) as raised:
                await client.chat.completions.create(messages=[{"role": "user", "content": "hi"}], **kwargs)
            body = raised.value.body
            assert raised.value.status_code == 400 and body["type"] == "invalid_request_error"
            assert body["param"] == param and body["message"], body
    assert len(stub.problems) == 3
