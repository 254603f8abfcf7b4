"""Who may do what through the real gateway: clients own their samples, admins operate."""

import grpc
import pytest
from sqlmodel import select

from foodcal.rpc.errors import details_of, error_info
from foodcal.store import Sample
from foodcal.v1 import common_pb2, gateway_pb2
from gateway.auth import identity_of
from tests.conftest import ADMIN_TOKEN, API_TOKEN, OTHER_CLIENT_TOKEN, auth, photo

CLIENT, OTHER = auth(API_TOKEN), auth(OTHER_CLIENT_TOKEN)
NUTRITION = common_pb2.Nutrition(calories_kcal=500, proteins_g=20, fats_g=20, carbs_g=60)


async def failure(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        result = call()
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    return raised.value


async def test_a_client_sees_only_its_own_samples_and_another_clients_id_is_not_found(system):
    app = await system(services=("gateway",), use_chatgpt=False)
    gw = app.gateway
    mine = await gw.AnalyzeMeal(gateway_pb2.AnalyzeMealRequest(image=photo()), metadata=CLIENT)
    theirs = await gw.AnalyzeMeal(gateway_pb2.AnalyzeMealRequest(image=photo((1, 2, 3))), metadata=OTHER)

    # the owner stored with the sample is a hash of the token, never the token
    with app.db.session() as session:
        owners = {s.id: s.owner for s in session.exec(select(Sample)).all()}
    assert owners == {
        mine.sample_id: identity_of(API_TOKEN),
        theirs.sample_id: identity_of(OTHER_CLIENT_TOKEN),
    }
    assert all(API_TOKEN not in owner and OTHER_CLIENT_TOKEN not in owner for owner in owners.values())

    got = await gw.GetSample(gateway_pb2.GetSampleRequest(sample_id=mine.sample_id), metadata=CLIENT)
    assert got.sample.sample_id == mine.sample_id
    listed = await gw.ListSamples(gateway_pb2.ListSamplesRequest(), metadata=CLIENT)
    assert [s.sample_id for s in listed.samples] == [mine.sample_id]

    # another client's sample answers exactly like a sample that does not exist
    unknown = await failure(
        lambda: gw.GetSample(gateway_pb2.GetSampleRequest(sample_id="f" * 32), metadata=CLIENT)
    )
    other = await failure(
        lambda: gw.GetSample(gateway_pb2.GetSampleRequest(sample_id=theirs.sample_id), metadata=CLIENT)
    )
    assert other.code() == unknown.code() == grpc.StatusCode.NOT_FOUND
    assert other.details().replace(theirs.sample_id, "f" * 32) == unknown.details()
    corrected = await failure(
        lambda: gw.CorrectSample(
            gateway_pb2.CorrectSampleRequest(sample_id=theirs.sample_id, nutrition=NUTRITION), metadata=CLIENT
        )
    )
    assert corrected.code() == grpc.StatusCode.NOT_FOUND
    with app.db.session() as session:
        assert session.get(Sample, theirs.sample_id).corrected_at is None
    fixed = await gw.CorrectSample(
        gateway_pb2.CorrectSampleRequest(sample_id=mine.sample_id, nutrition=NUTRITION), metadata=CLIENT
    )
    assert fixed.sample.corrected

    # a client's stats count its own samples; the admin's count every sample
    own = await gw.GetStats(gateway_pb2.GetStatsRequest(), metadata=CLIENT)
    assert own.total_samples == 1 and own.corrected_samples == 1
    everything = await gw.GetStats(gateway_pb2.GetStatsRequest(), metadata=auth(ADMIN_TOKEN))
    assert everything.total_samples == 2
    listed = await gw.ListSamples(gateway_pb2.ListSamplesRequest(), metadata=auth(ADMIN_TOKEN))
    assert {s.sample_id for s in listed.samples} == {mine.sample_id, theirs.sample_id}
    got = await gw.GetSample(
        gateway_pb2.GetSampleRequest(sample_id=theirs.sample_id), metadata=auth(ADMIN_TOKEN)
    )
    assert got.sample.sample_id == theirs.sample_id


async def test_duplicate_image_says_nothing_about_another_clients_photos(system):
    app = await system(services=("gateway",), use_chatgpt=False)

    async def duplicate(metadata) -> bool:
        request = gateway_pb2.AnalyzeMealRequest(image=photo((9, 99, 199)))
        return (await app.gateway.AnalyzeMeal(request, metadata=metadata, timeout=60)).duplicate_image

    assert [await duplicate(CLIENT), await duplicate(OTHER)] == [False, False]  # B learns nothing of A
    assert [await duplicate(OTHER), await duplicate(CLIENT)] == [True, True]  # each its own before


async def test_admin_rpcs_refuse_a_client_token_and_say_which_role_is_needed(system):
    app = await system(services=("gateway",), use_chatgpt=False)
    gw = app.gateway
    calls = {
        "StartTrainingRun": lambda: gw.StartTrainingRun(
            gateway_pb2.GatewayServiceStartTrainingRunRequest(), metadata=CLIENT
        ),
        "WatchTrainingRun": lambda: gw.WatchTrainingRun(
            gateway_pb2.GatewayServiceWatchTrainingRunRequest(run_id="a" * 32), metadata=CLIENT
        ),
        "ListModelVersions": lambda: gw.ListModelVersions(
            gateway_pb2.GatewayServiceListModelVersionsRequest(), metadata=CLIENT
        ),
        "RollbackModel": lambda: gw.RollbackModel(
            gateway_pb2.GatewayServiceRollbackModelRequest(version=0), metadata=CLIENT
        ),
    }
    for name, call in calls.items():
        error = await failure(call)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, name
        assert name in error.details() and "admin token (ADMIN_TOKENS)" in error.details()
        info = error_info(details_of(error))
        assert info.reason == "ADMIN_ROLE_REQUIRED" and info.metadata["required_role"] == "admin"
    # an unknown token is still UNAUTHENTICATED, whatever the method
    error = await failure(
        lambda: gw.ListModelVersions(
            gateway_pb2.GatewayServiceListModelVersionsRequest(), metadata=auth("nope-nope-nope")
        )
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_token_cannot_be_both_a_clients_and_an_admins(tmp_path):
    from foodcal.settings import SettingsError
    from tests.conftest import make_settings

    with pytest.raises(SettingsError, match="ADMIN_TOKENS"):
        make_settings(tmp_path, admin_tokens=[API_TOKEN]).require_admin_tokens()


async def test_no_answer_names_the_labelers_endpoint(system, openai_stub):
    app = await system(services=("labeler", "gateway"))
    endpoint = openai_stub.base_url.split("://", 1)[1]  # 127.0.0.1:PORT/v1
    answer = await app.gateway.AnalyzeMeal(gateway_pb2.AnalyzeMealRequest(image=photo()), metadata=CLIENT)
    assert answer.chatgpt_label.provider == "openai-compatible"
    with app.db.session() as session:  # a label stored before the labeler named its provider
        sample = session.get(Sample, answer.sample_id)
        assert endpoint not in sample.label_provider
        sample.label_provider = openai_stub.base_url
        session.add(sample)
    got = await app.gateway.GetSample(
        gateway_pb2.GetSampleRequest(sample_id=answer.sample_id), metadata=CLIENT
    )
    listed = await app.gateway.ListSamples(gateway_pb2.ListSamplesRequest(), metadata=auth(ADMIN_TOKEN))
    assert got.sample.chatgpt_label.provider == "openai-compatible"
    for message in (answer, got, listed):
        assert endpoint not in str(message)


async def test_label_error_is_a_reason_code_and_the_full_text_stays_in_the_database(system):
    from model_store.ports import free_port

    down = f"127.0.0.1:{free_port()}"  # no labeler there: gRPC's text names the address
    app = await system(services=("gateway",), labeler_address=down)
    answer = await app.gateway.AnalyzeMeal(gateway_pb2.AnalyzeMealRequest(image=photo()), metadata=CLIENT)
    got = await app.gateway.GetSample(
        gateway_pb2.GetSampleRequest(sample_id=answer.sample_id), metadata=CLIENT
    )
    listed = await app.gateway.ListSamples(gateway_pb2.ListSamplesRequest(), metadata=auth(ADMIN_TOKEN))
    assert got.sample.label_error == listed.samples[0].label_error == "unavailable"
    with app.db.session() as session:
        assert down in session.get(Sample, answer.sample_id).label_error


async def test_an_unexpected_error_reaches_the_client_without_internal_detail(system, monkeypatch):
    import gateway.service

    def broken(*_args, **_kwargs):
        raise RuntimeError("/srv/foodcal/secret_module.py: postgresql://admin:pw@db-internal:5432 exploded")

    monkeypatch.setattr(gateway.service, "stats", broken)
    app = await system(services=("gateway",), use_chatgpt=False)
    error = await failure(
        lambda: app.gateway.GetStats(gateway_pb2.GetStatsRequest(), metadata=auth(ADMIN_TOKEN))
    )
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error_info(details_of(error)).reason == "INTERNAL_ERROR"
    for secret in ("secret_module", "db-internal", "RuntimeError", "Traceback"):
        assert secret not in error.details() and secret not in str(error.trailing_metadata())


async def test_the_rules_hold_against_a_gateway_process(torchserve, tmp_path):
    """The same rules with `python -m gateway` as its own process, configured from the environment."""
    from foodcal.rpc.errors import retry_info
    from foodcal.v1 import gateway_pb2_grpc
    from tests.conftest import INTERNAL_TOKEN, free_port
    from tests.processes import ServiceProcess, env_for

    port = free_port()
    env = env_for(
        {
            **torchserve.settings(),
            "api_tokens": [API_TOKEN, OTHER_CLIENT_TOKEN],
            "admin_tokens": [ADMIN_TOKEN],
            "internal_token": INTERNAL_TOKEN,
            "use_chatgpt": False,
            "client_rate_per_minute": 1,
            "client_rate_burst": 2,
            "database_url": f"sqlite:///{tmp_path}/foodcal.db",
            "upload_dir": tmp_path / "uploads",
            "models_dir": tmp_path / "models",
            "gateway_port": port,
        }
    )
    process = ServiceProcess("gateway", port, env, tmp_path / "gateway.log").start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            gw = gateway_pb2_grpc.GatewayServiceStub(channel)

            def analyze(shade: int, request_id: str = ""):
                request = gateway_pb2.AnalyzeMealRequest(image=photo((shade, 3, 3)), request_id=request_id)
                return gw.AnalyzeMeal(request, metadata=CLIENT, timeout=60)

            mine = await analyze(1, "first")
            error = await failure(
                lambda: gw.GetSample(gateway_pb2.GetSampleRequest(sample_id=mine.sample_id), metadata=OTHER)
            )
            assert error.code() == grpc.StatusCode.NOT_FOUND
            error = await failure(
                lambda: gw.StartTrainingRun(
                    gateway_pb2.GatewayServiceStartTrainingRunRequest(), metadata=CLIENT
                )
            )
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "admin" in error.details()
            await analyze(2)
            error = await failure(lambda: analyze(3))  # the burst of 2 is spent
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert retry_info(details_of(error)).retry_delay.ToTimedelta().total_seconds() > 50
            assert await analyze(1, "first") == mine  # a replay is answered, spends nothing, stores nothing
            listed = await gw.ListSamples(gateway_pb2.ListSamplesRequest(), metadata=CLIENT)
            assert len(listed.samples) == 2
    finally:
        process.stop()
