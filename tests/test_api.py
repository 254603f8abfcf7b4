"""Health, reflection, auth and bad input on every service, through real channels."""

import math

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from foodcal.v1 import common_pb2, gateway_pb2, labeler_pb2, labeler_pb2_grpc, trainer_pb2
from tests.conftest import API_TOKEN, INTERNAL_TOKEN, auth, photo

SERVICES = {
    "gateway": "foodcal.v1.GatewayService",
    "labeler": "foodcal.v1.LabelerService",
    "trainer": "foodcal.v1.TrainerService",
}


async def test_every_service_reports_serving_and_lists_itself_by_reflection(system):
    app = await system(use_chatgpt=False)
    for name, server in app.servers.items():
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            named = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICES[name]), timeout=5
            )
            assert named.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            responses = reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            listed = [s.name async for r in responses for s in r.list_services_response.service]
            assert SERVICES[name] in listed and "grpc.health.v1.Health" in listed


GATEWAY_CALLS = [
    ("AnalyzeMeal", gateway_pb2.AnalyzeMealRequest(image=photo())),
    ("GetSample", gateway_pb2.GetSampleRequest(sample_id="x")),
    ("ListSamples", gateway_pb2.ListSamplesRequest()),
    ("CorrectSample", gateway_pb2.CorrectSampleRequest(sample_id="x")),
    ("GetStats", gateway_pb2.GetStatsRequest()),
    ("StartTrainingRun", trainer_pb2.StartTrainingRunRequest()),
    ("ListModelVersions", trainer_pb2.ListModelVersionsRequest()),
    ("RollbackModel", trainer_pb2.RollbackModelRequest(version=0)),
]
BAD_HEADERS = [
    (),
    (("authorization", "Bearer wrong-token-123"),),
    (("authorization", API_TOKEN),),  # no "Bearer "
    (("authorization", f"Basic {API_TOKEN}"),),
    (("authorization", "Bearer "),),
    (("authorization", f"Bearer {INTERNAL_TOKEN}"),),  # the internal token is not a client token
]


@pytest.mark.parametrize(
    "headers", BAD_HEADERS, ids=["none", "wrong", "no-scheme", "basic", "empty", "internal"]
)
async def test_every_gateway_rpc_refuses_missing_wrong_or_malformed_tokens(system, headers):
    app = await system(use_chatgpt=False)
    for method, request in GATEWAY_CALLS:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await getattr(app.gateway, method)(request, metadata=headers, timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
        assert API_TOKEN not in (raised.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        stream = app.gateway.WatchTrainingRun(
            trainer_pb2.WatchTrainingRunRequest(run_id="x"), metadata=headers
        )
        async for _ in stream:
            pass
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert app.sample_count() == 0


async def test_right_token_passes(system):
    app = await system(use_chatgpt=False)
    totals = await app.gateway.GetStats(gateway_pb2.GetStatsRequest(), metadata=auth(), timeout=10)
    assert totals.total_samples == 0 and totals.training_data_samples == 0


async def test_internal_services_refuse_calls_without_the_internal_token(system):
    app = await system(use_chatgpt=False)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.servers['labeler'].port}") as channel:
        labeler = labeler_pb2_grpc.LabelerServiceStub(channel)
        for headers in ((), auth(API_TOKEN), auth("nope-nope-nope")):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await labeler.LabelMeal(
                    labeler_pb2.LabelMealRequest(image=photo()), metadata=headers, timeout=10
                )
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


# -- other bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        (-1.0, 10, 10, 10),
        (math.nan, 10, 10, 10),
        (500, math.inf, 10, 10),
        (500, 10, -0.5, 10),
        (1e7, 1, 1, 1),
    ],
)
async def test_correction_with_negative_nan_or_absurd_values_is_refused(system, values):
    app = await system(use_chatgpt=False)
    sample_id = (
        await app.gateway.AnalyzeMeal(gateway_pb2.AnalyzeMealRequest(image=photo()), metadata=auth())
    ).sample_id
    nutrition = common_pb2.Nutrition(
        calories_kcal=values[0], proteins_g=values[1], fats_g=values[2], carbs_g=values[3]
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await app.gateway.CorrectSample(
            gateway_pb2.CorrectSampleRequest(sample_id=sample_id, nutrition=nutrition), metadata=auth()
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    sample = (
        await app.gateway.GetSample(gateway_pb2.GetSampleRequest(sample_id=sample_id), metadata=auth())
    ).sample
    assert not sample.corrected


async def test_correction_is_stored_and_counted(system):
    app = await system(use_chatgpt=False)
    sample_id = (
        await app.gateway.AnalyzeMeal(gateway_pb2.AnalyzeMealRequest(image=photo()), metadata=auth())
    ).sample_id
    nutrition = common_pb2.Nutrition(calories_kcal=512, proteins_g=20, fats_g=21, carbs_g=60)
    response = await app.gateway.CorrectSample(
        gateway_pb2.CorrectSampleRequest(sample_id=sample_id, nutrition=nutrition), metadata=auth()
    )
    assert response.sample.corrected and response.sample.correction == nutrition
    totals = await app.gateway.GetStats(gateway_pb2.GetStatsRequest(), metadata=auth())
    assert totals.corrected_samples == 1


async def test_unknown_sample_is_not_found(system):
    app = await system(use_chatgpt=False)
    for sample_id in ("0" * 32, "../../etc/passwd"):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await app.gateway.GetSample(gateway_pb2.GetSampleRequest(sample_id=sample_id), metadata=auth())
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await app.gateway.GetSample(gateway_pb2.GetSampleRequest(), metadata=auth())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_samples_pages_newest_first_and_filters(system):
    app = await system(use_chatgpt=False)
    ids = [
        (
            await app.gateway.AnalyzeMeal(
                gateway_pb2.AnalyzeMealRequest(image=photo(color=(i, 60, 90))), metadata=auth()
            )
        ).sample_id
        for i in range(5)
    ]
    seen, token = [], ""
    while True:
        page = await app.gateway.ListSamples(
            gateway_pb2.ListSamplesRequest(page_size=2, page_token=token), metadata=auth()
        )
        seen += [s.sample_id for s in page.samples]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]
    pending = await app.gateway.ListSamples(
        gateway_pb2.ListSamplesRequest(label_status=common_pb2.LABEL_STATUS_PENDING), metadata=auth()
    )
    assert list(pending.samples) == []
    for bad in (10**9, -1, 101):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await app.gateway.ListSamples(gateway_pb2.ListSamplesRequest(page_size=bad), metadata=auth())
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await app.gateway.ListSamples(gateway_pb2.ListSamplesRequest(page_token="garbage!"), metadata=auth())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "params",
    [
        {"epochs": 0},
        {"epochs": 10**9},
        {"batch_size": 0},
        {"learning_rate": -0.1},
        {"learning_rate": math.nan},
        {"learning_rate": math.inf},
        {"hidden_size": -3},
    ],
)
async def test_absurd_training_parameters_are_invalid_argument(system, params):
    app = await system(use_chatgpt=False)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await app.gateway.StartTrainingRun(trainer_pb2.StartTrainingRunRequest(**params), metadata=auth())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
