"""TLS between our own services with an internal CA: callers (the gateway, `make backfill`) trust
the CA alone and never hold a service's private key; mutual TLS when the services require it."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import grpc
import pytest

from foodcal.settings import SettingsError
from foodcal.v1 import common_pb2, gateway_pb2, labeler_pb2, labeler_pb2_grpc
from tests.conftest import INTERNAL_TOKEN, auth, make_settings, photo, start_service
from tests.processes import env_for
from tests.tls_certs import CertificateAuthority


@pytest.fixture
def ca(tmp_path) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path)


async def start_gateway(app, **tls) -> None:
    """The gateway alone with its own TLS settings: nothing of the services' server pair."""
    import gateway.__main__ as gateway_main

    no_server_pair = {"internal_tls_cert_file": None, "internal_tls_key_file": None}
    settings = app.settings.model_copy(update={**no_server_pair, **tls})
    app.servers["gateway"] = await start_service(gateway_main, settings, app.db, settings.gateway_port)


async def assert_reaches_labeler_and_trainer(app, openai_stub) -> None:
    answer = await app.gateway.AnalyzeMeal(
        gateway_pb2.AnalyzeMealRequest(image=photo()), metadata=auth(), timeout=60
    )
    assert answer.label_status == common_pb2.LABEL_STATUS_LABELED and openai_stub.calls == 1  # labeler
    versions = await app.gateway.ListModelVersions(
        gateway_pb2.GatewayServiceListModelVersionsRequest(), metadata=auth(), timeout=30
    )
    assert versions.served_version == 0  # trainer


async def test_the_gateway_trusts_our_services_with_the_ca_alone(system, openai_stub, ca):
    server_cert, server_key = ca.issue("internal-server")
    app = await system(
        services=("labeler", "trainer"), internal_tls_cert_file=server_cert, internal_tls_key_file=server_key
    )
    await start_gateway(app, internal_tls_ca_file=ca.cert_file)
    await assert_reaches_labeler_and_trainer(app, openai_stub)


async def test_services_requiring_client_certificates_admit_only_callers_with_one(system, openai_stub, ca):
    server_cert, server_key = ca.issue("internal-server")
    client_cert, client_key = ca.issue("gateway-client", client=True)
    app = await system(
        services=("labeler", "trainer"),
        internal_tls_cert_file=server_cert,
        internal_tls_key_file=server_key,
        internal_tls_ca_file=ca.cert_file,
        internal_tls_require_client_cert=True,
    )
    await start_gateway(
        app,
        internal_tls_ca_file=ca.cert_file,
        internal_tls_client_cert_file=client_cert,
        internal_tls_client_key_file=client_key,
    )
    await assert_reaches_labeler_and_trainer(app, openai_stub)
    # The right CA and the token, but no client certificate: the handshake fails.
    credentials = grpc.ssl_channel_credentials(ca.cert_file.read_bytes())
    async with grpc.aio.secure_channel(app.settings.labeler_address, credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await labeler_pb2_grpc.LabelerServiceStub(channel).LabelMeal(
                labeler_pb2.LabelMealRequest(image=photo()),
                metadata=(("authorization", f"Bearer {INTERNAL_TOKEN}"),),
                timeout=5,
            )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_make_backfill_reaches_a_trainer_serving_mutual_tls(system, ca, tmp_path):
    server_cert, server_key = ca.issue("internal-server")
    client_cert, client_key = ca.issue("operator-client", client=True)
    app = await system(
        services=("trainer",),
        internal_tls_cert_file=server_cert,
        internal_tls_key_file=server_key,
        internal_tls_ca_file=ca.cert_file,
        internal_tls_require_client_cert=True,
    )
    env = env_for(
        {
            "trainer_address": app.settings.trainer_address,
            "internal_token": INTERNAL_TOKEN,
            "internal_tls_ca_file": ca.cert_file,
            "internal_tls_client_cert_file": client_cert,
            "internal_tls_client_key_file": client_key,
        }
    )
    # cwd: a directory without a .env, so only these settings count; in a thread, because the
    # trainer serves on this test's event loop.
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "trainer.backfill"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and "re-embedded 0 samples" in done.stdout, done.stderr[-2000:]


def test_a_client_certificate_needs_its_key_and_a_ca(tmp_path, ca):
    client_cert, _ = ca.issue("client", client=True)
    with pytest.raises(SettingsError, match=r"INTERNAL_TLS_CLIENT_KEY_FILE: .*both"):
        make_settings(
            tmp_path, internal_tls_ca_file=ca.cert_file, internal_tls_client_cert_file=client_cert
        ).require_internal_tls_client()
    with pytest.raises(SettingsError, match=r"INTERNAL_TLS_CA_FILE"):
        make_settings(
            tmp_path,
            internal_tls_client_cert_file=client_cert,
            internal_tls_client_key_file=tmp_path / "client.key",
        ).require_internal_tls_client()


def test_requiring_client_certificates_needs_the_ca_that_signs_them(tmp_path, ca):
    server_cert, server_key = ca.issue("server")
    settings = make_settings(
        tmp_path,
        internal_tls_cert_file=server_cert,
        internal_tls_key_file=server_key,
        internal_tls_require_client_cert=True,
    )
    with pytest.raises(SettingsError, match=r"INTERNAL_TLS_REQUIRE_CLIENT_CERT: .*INTERNAL_TLS_CA_FILE"):
        settings.require_internal_tls_server()
    without_tls = make_settings(tmp_path, internal_tls_require_client_cert=True)
    with pytest.raises(SettingsError, match=r"INTERNAL_TLS_REQUIRE_CLIENT_CERT: .*INTERNAL_TLS_CERT_FILE"):
        without_tls.require_internal_tls_server()
