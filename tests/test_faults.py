"""Faults survived with nothing lost: TorchServe, gateway and database going away.

The trainer's faults (killed or stopped mid-run) are in tests/test_faults_trainer.py.
"""

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import labeler.__main__ as labeler_main
from foodcal.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from model_store.server import TorchServeProcess, wait_until_ready
from tests.conftest import (
    ADMIN_TOKEN,
    API_TOKEN,
    INTERNAL_TOKEN,
    OPENAI_KEY,
    auth,
    free_port,
    make_settings,
    photo,
    start_service,
    start_torchserve,
)
from tests.fixtures_databases import POSTGRES_URL, postgres_schema_url
from tests.processes import ServiceProcess, env_for
from tests.tcp_proxy import TcpProxy
from tests.test_gateway import wait_for_status


def base_settings(tmp_path, torchserve_handle=None, **extra) -> dict:
    values = {
        "api_tokens": [API_TOKEN],
        "admin_tokens": [ADMIN_TOKEN],
        "internal_token": INTERNAL_TOKEN,
        "database_url": f"sqlite:///{tmp_path}/foodcal.db",
        "upload_dir": tmp_path / "uploads",
        "models_dir": tmp_path / "models",
        "use_chatgpt": False,
        "label_retry_base_s": 0.2,
        "label_retry_max_s": 1.0,
        "label_poll_interval_s": 0.1,
    }
    if torchserve_handle is not None:
        values.update(torchserve_handle.settings())
    values.update(extra)
    return values


async def test_torchserve_killed_in_flight_is_unavailable_fast_and_recovers_without_our_restart(
    system, model_store, tmp_path
):
    process = start_torchserve(model_store, tmp_path / "ts")
    config = process.config
    endpoint, management = (
        config.inference_address,
        config.management_address,
    )
    app = await system(
        use_chatgpt=False,
        torchserve_endpoints=[endpoint],
        torchserve_management=[management],
        torchserve_timeout_s=3.0,
    )
    from model_store.torchserve_client import TorchServeClient

    probe = TorchServeClient([endpoint], [management])
    try:
        await wait_until_ready(probe, process, timeout_s=180)
        stop, outcomes, details = asyncio.Event(), [], set()

        async def client(index: int) -> None:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    request = gateway_pb2.AnalyzeMealRequest(
                        image=photo(color=(index, len(outcomes) % 250, 7))
                    )
                    await app.gateway.AnalyzeMeal(request, metadata=auth(), timeout=30)
                    outcomes.append(("ok", time.monotonic() - started))
                except grpc.aio.AioRpcError as error:
                    outcomes.append((error.code(), time.monotonic() - started))
                    details.add(error.details())
                    await asyncio.sleep(0.1)

        workers = [asyncio.create_task(client(i)) for i in range(4)]
        await asyncio.sleep(1.5)
        process.stop(timeout_s=0.1)  # TorchServe dies with requests in flight
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*workers)
        failures = [(code, seconds) for code, seconds in outcomes if code != "ok"]
        assert failures, "no request saw the outage"
        assert {code for code, _ in failures} == {grpc.StatusCode.UNAVAILABLE}, details
        # Bounded by our deadlines (two TorchServe calls of at most 3 s each), not the 30 s client timeout.
        assert max(seconds for _, seconds in failures) < 2 * 3.0 + 3.0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.servers['gateway'].port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert app.sample_count() == sum(1 for code, _ in outcomes if code == "ok")  # no half samples

        process = TorchServeProcess(config)  # back on the same ports; our gateway is not restarted
        process.start({"food101": "food101.mar", "nutrition": "nutrition-v0.mar"})
        await wait_until_ready(probe, process, timeout_s=180)
        response = await app.gateway.AnalyzeMeal(
            gateway_pb2.AnalyzeMealRequest(image=photo()), metadata=auth()
        )
        assert response.sample_id
    finally:
        await probe.close()
        process.stop()


async def test_gateway_killed_with_labels_pending_completes_them_after_restart(
    torchserve, openai_stub, tmp_path
):
    openai_stub.reset()
    gateway_port, labeler_port = free_port(), free_port()
    values = base_settings(
        tmp_path,
        torchserve,
        gateway_port=gateway_port,
        labeler_port=labeler_port,
        labeler_address=f"127.0.0.1:{labeler_port}",
        use_chatgpt=True,
        use_own_model_instead_chatgpt=True,
        openai_api_key=OPENAI_KEY,
        openai_base_url=openai_stub.base_url,
        openai_max_retries=0,
    )
    env = env_for(values)
    gateway = ServiceProcess("gateway", gateway_port, env, tmp_path / "gateway.log").start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway_port}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        ids = [
            (
                await stub.AnalyzeMeal(
                    gateway_pb2.AnalyzeMealRequest(image=photo(color=(i * 60, 1, 2))), metadata=auth()
                )
            ).sample_id
            for i in range(4)
        ]
    gateway.kill()  # labeler was down the whole time: every label is still pending
    from foodcal.store import Database

    db = Database(values["database_url"])
    labeler = await start_service(labeler_main, make_settings(tmp_path, **values), db, labeler_port)
    gateway = ServiceProcess("gateway", gateway_port, env, tmp_path / "gateway.log").start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway_port}") as channel:

            class App:
                gateway = gateway_pb2_grpc.GatewayServiceStub(channel)

            for sample_id in ids:
                await wait_for_status(App, sample_id, common_pb2.LABEL_STATUS_LABELED)
        assert openai_stub.calls == 4  # none lost, none duplicated
    finally:
        gateway.stop()
        await labeler.stop(0)
        db.dispose()


async def test_database_vanishing_for_a_moment_is_unavailable_then_service_resumes(system):
    url, schema = postgres_schema_url()
    host_port = POSTGRES_URL.split("@", 1)[1].split("/", 1)[0]
    proxy = TcpProxy(host_port.split(":")[0], int(host_port.split(":")[1]), free_port())
    proxy.start()
    proxied = url.replace(host_port, f"127.0.0.1:{proxy.port}")
    app = await system(db_url=proxied, use_chatgpt=False)
    try:
        ok = await app.gateway.AnalyzeMeal(gateway_pb2.AnalyzeMealRequest(image=photo()), metadata=auth())
        proxy.cut()
        for call in (
            app.gateway.AnalyzeMeal(
                gateway_pb2.AnalyzeMealRequest(image=photo(color=(1, 1, 1))), metadata=auth()
            ),
            app.gateway.GetStats(gateway_pb2.GetStatsRequest(), metadata=auth()),
            app.gateway.GetSample(gateway_pb2.GetSampleRequest(sample_id=ok.sample_id), metadata=auth()),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        proxy.start()
        totals = await app.gateway.GetStats(gateway_pb2.GetStatsRequest(), metadata=auth())
        assert totals.total_samples == 1  # no half-written row from the failed request
        again = await app.gateway.AnalyzeMeal(
            gateway_pb2.AnalyzeMealRequest(image=photo(color=(2, 2, 2))), metadata=auth()
        )
        assert again.sample_id
    finally:
        proxy.close()
        from tests.fixtures_databases import drop_postgres_schema

        drop_postgres_schema(schema)


async def test_unwritable_upload_directory_is_a_clear_error_with_no_sample(system, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the upload directory should be")
    app = await system(use_chatgpt=False, upload_dir=blocker)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await app.gateway.AnalyzeMeal(gateway_pb2.AnalyzeMealRequest(image=photo()), metadata=auth())
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "could not store the image" in raised.value.details()
    assert app.sample_count() == 0
