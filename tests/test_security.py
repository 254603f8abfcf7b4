"""No secret in any log line or error message, with real processes and their real logs."""

import grpc

from foodcal.v1 import gateway_pb2, gateway_pb2_grpc, labeler_pb2, labeler_pb2_grpc
from tests.conftest import free_port, photo
from tests.processes import ServiceProcess, env_for

SECRET_TOKEN = "client-secret-5f2b9c"
SECRET_INTERNAL = "internal-secret-8d1e4a"
SECRET_OPENAI = "sk-openai-secret-3c7f0d"


async def test_no_secret_appears_in_any_log_or_error(torchserve, openai_stub, tmp_path):
    openai_stub.api_key = SECRET_OPENAI
    openai_stub.reset()
    ports = {"gateway": free_port(), "labeler": free_port(), "trainer": free_port()}
    env = env_for(
        {
            **torchserve.settings(),
            "api_tokens": [SECRET_TOKEN],
            "internal_token": SECRET_INTERNAL,
            "openai_api_key": SECRET_OPENAI,
            "openai_base_url": openai_stub.base_url,
            "use_chatgpt": True,
            "database_url": f"sqlite:///{tmp_path}/foodcal.db",
            "upload_dir": tmp_path / "uploads",
            "models_dir": tmp_path / "models",
            "gateway_port": ports["gateway"],
            "labeler_port": ports["labeler"],
            "trainer_port": ports["trainer"],
            "labeler_address": f"127.0.0.1:{ports['labeler']}",
            "trainer_address": f"127.0.0.1:{ports['trainer']}",
            "log_level": "DEBUG",
        }
    )
    services = [ServiceProcess(name, ports[name], env, tmp_path / f"{name}.log").start() for name in ports]
    details = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['gateway']}") as channel:
            gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
            good = (("authorization", f"Bearer {SECRET_TOKEN}"),)
            await gateway.AnalyzeMeal(gateway_pb2.AnalyzeMealRequest(image=photo()), metadata=good)
            for headers in (
                (("authorization", f"Bearer {SECRET_TOKEN}x"),),
                (("authorization", SECRET_TOKEN),),
            ):
                try:
                    await gateway.GetStats(gateway_pb2.GetStatsRequest(), metadata=headers)
                except grpc.aio.AioRpcError as error:
                    details.append(error.details())
            openai_stub.api_key = "sk-rotated"  # now the labeler's key is rejected (401)
            response = await gateway.AnalyzeMeal(
                gateway_pb2.AnalyzeMealRequest(image=photo(color=(9, 9, 9))), metadata=good
            )
            details.append(str(response))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['labeler']}") as channel:
            try:
                await labeler_pb2_grpc.LabelerServiceStub(channel).LabelMeal(
                    labeler_pb2.LabelMealRequest(image=photo()),
                    metadata=(("authorization", f"Bearer {SECRET_INTERNAL}-wrong"),),
                )
            except grpc.aio.AioRpcError as error:
                details.append(error.details())
    finally:
        for service in services:
            service.stop()
        openai_stub.api_key = "sk-test-key-123"
    logs = [path.read_text() for path in tmp_path.glob("*.log")]
    logs += [path.read_text() for path in torchserve.process.log_dir.glob("*.log")]
    assert sum(len(text) for text in logs) > 1000  # there were logs to search
    assert "refused" in "".join(logs)  # the refused calls were logged, without the token
    for secret in (SECRET_TOKEN, SECRET_INTERNAL, SECRET_OPENAI):
        for text in logs + details:
            assert secret not in text
