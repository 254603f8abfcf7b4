"""Status codes a client can act on, each with google.rpc details (ErrorInfo, RetryInfo)."""

import grpc
import pytest

from foodcal.rpc.errors import details_of, error_info, retry_info
from foodcal.store.db import DatabaseUnavailable
from foodcal.v1 import common_pb2, gateway_pb2
from tests.conftest import auth, photo


async def failed(call):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    error = raised.value
    return error, error_info(details_of(error)), retry_info(details_of(error))


def database_down_after(db, monkeypatch, calls_allowed: int) -> None:
    """Every database session after the first `calls_allowed` fails as a lost connection does."""
    real, calls = db.session, 0

    def session():
        nonlocal calls
        calls += 1
        if calls > calls_allowed:
            raise DatabaseUnavailable("database unavailable: OperationalError")
        return real()

    monkeypatch.setattr(db, "session", session)


async def test_a_wrong_internal_token_is_internal_to_the_client_not_unauthenticated(system):
    trainer = await system(services=("trainer",), use_chatgpt=False)
    app = await system(
        services=("gateway",),
        db_url=trainer.settings.database_url,
        use_chatgpt=False,
        trainer_address=trainer.settings.trainer_address,
        internal_token="not-the-trainers-internal-token",
    )
    error, info, _ = await failed(
        app.gateway.ListModelVersions(gateway_pb2.GatewayServiceListModelVersionsRequest(), metadata=auth())
    )
    assert error.code() == grpc.StatusCode.INTERNAL  # the client's own token was fine
    assert "INTERNAL_TOKEN" in error.details()
    assert (info.domain, info.reason) == ("foodcal", "INTERNAL_TOKEN_REFUSED")


async def test_a_database_failure_while_correcting_is_unavailable_with_retry_info(system, monkeypatch):
    app = await system(use_chatgpt=False)
    sample_id = (
        await app.gateway.AnalyzeMeal(gateway_pb2.AnalyzeMealRequest(image=photo()), metadata=auth())
    ).sample_id
    database_down_after(app.db, monkeypatch, calls_allowed=1)  # the sample is found, the write fails
    nutrition = common_pb2.Nutrition(calories_kcal=500, proteins_g=20, fats_g=20, carbs_g=60)
    error, info, retry = await failed(
        app.gateway.CorrectSample(
            gateway_pb2.CorrectSampleRequest(sample_id=sample_id, nutrition=nutrition), metadata=auth()
        )
    )
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert info.reason == "DATABASE_UNAVAILABLE" and retry.retry_delay.ToTimedelta().total_seconds() > 0


@pytest.mark.parametrize(
    "call",
    [
        lambda gw: gw.ListModelVersions(
            gateway_pb2.GatewayServiceListModelVersionsRequest(), metadata=auth()
        ),
        lambda gw: gw.StartTrainingRun(gateway_pb2.GatewayServiceStartTrainingRunRequest(), metadata=auth()),
        lambda gw: gw.RollbackModel(
            gateway_pb2.GatewayServiceRollbackModelRequest(version=0), metadata=auth()
        ),
        lambda gw: gw.WatchTrainingRun(
            gateway_pb2.GatewayServiceWatchTrainingRunRequest(run_id="a" * 32), metadata=auth()
        ),
    ],
    ids=["versions", "start", "rollback", "watch"],
)
async def test_a_database_failure_in_the_trainer_is_unavailable_through_the_gateway(
    system, monkeypatch, call
):
    app = await system(services=("trainer", "gateway"), use_chatgpt=False)
    database_down_after(app.db, monkeypatch, calls_allowed=0)
    rpc = call(app.gateway)
    if hasattr(rpc, "__aiter__"):
        error, info, retry = await failed(_drain(rpc))
    else:
        error, info, retry = await failed(rpc)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert info.reason == "DATABASE_UNAVAILABLE" and retry is not None


async def _drain(stream):
    async for _ in stream:
        pass


async def test_a_torchserve_timeout_is_deadline_exceeded(system):
    app = await system(use_chatgpt=False, torchserve_timeout_s=0.001)
    error, info, retry = await failed(
        app.gateway.AnalyzeMeal(gateway_pb2.AnalyzeMealRequest(image=photo()), metadata=auth())
    )
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.details()
    assert info.reason == "MODEL_SERVER_TIMEOUT" and retry is not None
    assert app.sample_count() == 0


async def test_an_overlong_sample_id_says_so(system):
    app = await system(services=("gateway",), use_chatgpt=False)
    for sample_id, expected, reason in (
        ("", "sample_id is required", "SAMPLE_ID_MISSING"),
        ("x" * 65, "sample_id is at most 64 characters (got 65)", "SAMPLE_ID_TOO_LONG"),
    ):
        error, info, retry = await failed(
            app.gateway.GetSample(gateway_pb2.GetSampleRequest(sample_id=sample_id), metadata=auth())
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (error.details(), info.reason, retry) == (expected, reason, None)


async def test_model_server_down_is_unavailable_with_error_info(system):
    from tests.conftest import free_port

    dead = f"127.0.0.1:{free_port()}"
    app = await system(use_chatgpt=False, torchserve_endpoints=[dead], torchserve_management=[dead])
    error, info, retry = await failed(
        app.gateway.AnalyzeMeal(gateway_pb2.AnalyzeMealRequest(image=photo()), metadata=auth())
    )
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert info.reason == "MODEL_SERVER_UNAVAILABLE" and retry is not None
