"""The gateway over TLS, as a real process, through the real grpcurl and the CLI."""

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from foodcal.ops.healthcheck import check
from foodcal.settings import SettingsError
from tests.conftest import ADMIN_TOKEN, API_TOKEN, INTERNAL_TOKEN, free_port, make_settings, photo
from tests.docs_commands import documented_certificate
from tests.processes import ROOT, env_for
from tests.tls_certs import self_signed

BIN = Path(sys.executable).parent
GATEWAY = "foodcal.v1.GatewayService"


def run(argv: list[str], cwd: Path, env: dict | None = None, stdin: str | None = None):
    return subprocess.run(
        argv, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


def test_tls_needs_both_files_and_existing_ones(tmp_path):
    cert, _ = self_signed(tmp_path)
    with pytest.raises(SettingsError, match="GATEWAY_TLS_KEY_FILE"):
        make_settings(tmp_path, gateway_tls_cert_file=cert).require_gateway_tls()
    with pytest.raises(SettingsError, match="no such file"):
        make_settings(
            tmp_path, gateway_tls_cert_file=cert, gateway_tls_key_file=tmp_path / "nope"
        ).require_gateway_tls()


async def test_the_gateway_serves_tls_to_grpcurl_and_the_cli(torchserve, tmp_path):
    cert, key = documented_certificate(tmp_path)  # as docs/security.md makes it
    port = free_port()
    env = env_for(
        {
            **torchserve.settings(),
            "api_tokens": [API_TOKEN],
            "admin_tokens": [ADMIN_TOKEN],
            "internal_token": INTERNAL_TOKEN,
            "use_chatgpt": False,
            "database_url": f"sqlite:///{tmp_path}/foodcal.db",
            "upload_dir": tmp_path / "uploads",
            "models_dir": tmp_path / "models",
            "gateway_port": port,
            "gateway_tls_cert_file": cert,
            "gateway_tls_key_file": key,
        }
    )
    address = f"127.0.0.1:{port}"
    with (tmp_path / "gateway.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 60
        while not check(address, ca_file=str(cert), timeout_s=1)[0]:
            assert process.poll() is None and time.monotonic() < deadline, (
                tmp_path / "gateway.log"
            ).read_text()
            time.sleep(0.3)
        assert "(TLS)" in (tmp_path / "gateway.log").read_text()
        assert not check(address, timeout_s=2)[0]  # plaintext gets nothing

        grpcurl = [str(BIN / "grpcurl"), "-cacert", str(cert)]
        listed = run([*grpcurl, address, "list"], tmp_path)
        assert listed.returncode == 0 and GATEWAY in listed.stdout.split(), listed.stderr
        bearer = ["-H", f"authorization: Bearer {API_TOKEN}"]
        image = json.dumps({"image": base64.b64encode(photo()).decode(), "request_id": "tls-1"})
        analyzed = run(
            [*grpcurl, *bearer, "-d", "@", address, f"{GATEWAY}/AnalyzeMeal"], tmp_path, stdin=image
        )
        assert analyzed.returncode == 0, analyzed.stderr
        answer = json.loads(analyzed.stdout)
        assert answer.get("sample_id") or answer.get("sampleId"), answer
        for refused in (
            [str(BIN / "grpcurl"), "-plaintext", address, "list"],  # no TLS
            [str(BIN / "grpcurl"), address, "list"],  # TLS, but our certificate is not trusted
        ):
            assert run(refused, tmp_path).returncode != 0

        (tmp_path / "photo.jpg").write_bytes(photo((5, 90, 5)))
        cli_env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "FOODCAL_TOKEN": API_TOKEN,
            "FOODCAL_ADDRESS": address,
        }
        client = [sys.executable, "-m", "foodcal.cli.main"]
        analyzed = run([*client, "--ca-file", str(cert), "analyze", "photo.jpg"], tmp_path, cli_env)
        assert analyzed.returncode == 0, analyzed.stderr
        stats = run([*client, "stats"], tmp_path, {**cli_env, "FOODCAL_CA_FILE": str(cert)})
        assert stats.returncode == 0 and "samples" in stats.stdout, stats.stderr
        plaintext = run([*client, "stats"], tmp_path, cli_env)
        assert plaintext.returncode == 2 and "UNAVAILABLE" in plaintext.stderr
        probe = run(
            [sys.executable, "-m", "foodcal.ops.healthcheck", "--ca-file", str(cert), address],
            tmp_path,
            cli_env,
        )
        assert probe.returncode == 0, probe.stderr
    finally:
        process.terminate()
        process.wait(timeout=30)


async def test_our_services_talk_tls_to_each_other_and_refuse_plaintext(system, openai_stub, tmp_path):
    """INTERNAL_TLS_*: the labeler and the trainer serve TLS; the gateway reaches both over it."""
    import grpc

    from foodcal.v1 import common_pb2, gateway_pb2, labeler_pb2, labeler_pb2_grpc
    from tests.conftest import auth

    cert, key = self_signed(tmp_path)
    app = await system(internal_tls_cert_file=cert, internal_tls_key_file=key)
    answer = await app.gateway.AnalyzeMeal(
        gateway_pb2.AnalyzeMealRequest(image=photo()), metadata=auth(), timeout=60
    )
    assert (
        answer.label_status == common_pb2.LABEL_STATUS_LABELED and openai_stub.calls == 1
    )  # via the labeler
    versions = await app.gateway.ListModelVersions(
        gateway_pb2.GatewayServiceListModelVersionsRequest(), metadata=auth()
    )
    assert versions.served_version == 0  # via the trainer
    metadata = (("authorization", f"Bearer {INTERNAL_TOKEN}"),)
    async with grpc.aio.insecure_channel(app.settings.labeler_address) as plaintext:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await labeler_pb2_grpc.LabelerServiceStub(plaintext).LabelMeal(
                labeler_pb2.LabelMealRequest(image=photo()), metadata=metadata, timeout=5
            )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_internal_tls_needs_the_certificate_and_its_key(tmp_path):
    cert, _ = self_signed(tmp_path)
    with pytest.raises(SettingsError, match="INTERNAL_TLS_KEY_FILE: TLS needs both"):
        make_settings(tmp_path, internal_tls_cert_file=cert).require_internal_tls_server()
