"""`python -m gateway`: serve GatewayService until SIGTERM."""

from __future__ import annotations

import logging

from grpc_health.v1 import health
from sqlmodel import select

from foodcal.rpc.entrypoint import run_service
from foodcal.rpc.grpc_server import ServerTLS, ServiceSpec, message_size_options
from foodcal.rpc.internal_tls import internal_channel
from foodcal.settings import Settings
from foodcal.settings_checks import is_loopback
from foodcal.store import Database, Sample, open_image_store
from foodcal.v1 import gateway_pb2, gateway_pb2_grpc, labeler_pb2_grpc, trainer_pb2_grpc
from gateway.analyze import Analyzer
from gateway.auth import RoleInterceptor, Roles
from gateway.budget import DailyBudget
from gateway.health import ModelServerHealth
from gateway.idempotency import RequestIds
from gateway.label_queue import LabelQueue, worker_name
from gateway.label_results import RetryPolicy
from gateway.rate_limit import RateLimiter
from gateway.request_limits import RequestLimits
from gateway.retention import PhotoRetention
from gateway.service import GatewayServicer
from model_store.torchserve_client import TorchServeClient
from model_store.worker.heap import keep_freed_memory

log = logging.getLogger(__name__)


def internal_metadata(settings: Settings) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {settings.internal_token}"),)


def _named_by_a_sample(db: Database, sha256: str) -> bool:
    with db.session() as session:
        return session.exec(select(Sample.id).where(Sample.image_sha256 == sha256)).first() is not None


def build(settings: Settings, db: Database, port: int) -> ServiceSpec:
    """Wire the gateway; `port` names this instance's queue worker (stable across restarts)."""
    settings.require_api_tokens()
    settings.require_admin_tokens()
    settings.require_internal_token()
    settings.refuse_example_tokens_beyond_loopback()
    settings.require_gateway_tls()
    settings.require_known_prices()
    options = message_size_options(settings.grpc_max_message_bytes)
    labeler_channel = internal_channel(settings, settings.labeler_address, options)
    trainer_channel = internal_channel(settings, settings.trainer_address, options)
    labeler = labeler_pb2_grpc.LabelerServiceStub(labeler_channel)
    metadata = internal_metadata(settings)

    def call_labeler(request, timeout: float | None = None):
        """`timeout`: what is left of a caller's deadline; LABELER_TIMEOUT_S at most."""
        limit = settings.labeler_timeout_s if timeout is None else min(timeout, settings.labeler_timeout_s)
        return labeler.LabelMeal(request, metadata=metadata, timeout=limit)

    images = open_image_store(settings)
    if swept := images.sweep_incoming(referenced=lambda sha256: _named_by_a_sample(db, sha256)):
        log.warning("removed %d staged photos left unpublished by a process that stopped", swept)
    torchserve = TorchServeClient.from_settings(settings)
    policy = RetryPolicy(settings.label_max_attempts, settings.label_retry_base_s, settings.label_retry_max_s)
    queue = LabelQueue(
        db,
        call_labeler,
        policy,
        worker_name(port),
        settings.label_lease_s,
        settings.label_poll_interval_s,
        budget=DailyBudget(db, settings.chatgpt_daily_budget_usd),
    )
    analyzer = Analyzer(settings, db, images, torchserve, call_labeler, policy, queue.wake)
    roles = Roles(settings.api_tokens, settings.admin_tokens)
    calls = calls_limiter(settings, db)
    servicer = GatewayServicer(
        db,
        analyzer,
        torchserve,
        trainer_pb2_grpc.TrainerServiceStub(trainer_channel),
        metadata,
        settings.openai_model if settings.use_chatgpt else "",
        roles,
        RateLimiter(db, settings.client_rate_per_minute, settings.client_rate_burst),
        RequestIds(db, calls),
    )

    retention = PhotoRetention(db, images, settings.retention_days, settings.retention_interval_s)
    service_name = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name
    health_servicer = health.aio.HealthServicer()
    model_server_health = ModelServerHealth(torchserve, health_servicer, service_name)

    async def on_start() -> None:
        if settings.use_chatgpt:
            queue.start()
        await model_server_health.start()
        retention.start()

    async def on_stop() -> None:
        await retention.stop()
        await model_server_health.stop()
        await queue.stop()
        await torchserve.close()
        await labeler_channel.close()
        await trainer_channel.close()

    return ServiceSpec(
        name="gateway",
        register=lambda server: gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server),
        service_names=[service_name],
        tokens=settings.api_tokens,
        max_message_bytes=settings.grpc_max_message_bytes,
        on_start=on_start,
        on_stop=on_stop,
        health=health_servicer,
        auth=RoleInterceptor(roles, RequestLimits(calls)),
        tls=tls_files(settings),
    )


def calls_limiter(settings: Settings, db: Database) -> RateLimiter:
    names = ("CLIENT_CALL_RATE_PER_MINUTE", "CLIENT_CALL_BURST")
    return RateLimiter(db, settings.client_call_rate_per_minute, settings.client_call_burst, names=names)


def tls_files(settings: Settings) -> ServerTLS | None:
    """The certificate chain and private key when GATEWAY_TLS_* are set; None serves plaintext."""
    if settings.gateway_tls_cert_file is None or settings.gateway_tls_key_file is None:
        if not is_loopback(settings.bind_host):
            log.warning("the gateway serves plaintext on %s: tokens travel in the clear", settings.bind_host)
        return None
    return ServerTLS(settings.gateway_tls_cert_file.read_bytes(), settings.gateway_tls_key_file.read_bytes())


def main() -> None:
    keep_freed_memory()  # a 12 MP photo's copies are not mapped afresh per request (worker_heap.py)
    run_service(
        "gateway",
        lambda settings, db: build(settings, db, settings.gateway_port),
        lambda settings: settings.gateway_port,
        lambda s: (
            f"flags: USE_CHATGPT={s.use_chatgpt} USE_TRAINED_MODEL={s.use_trained_model} "
            f"USE_OWN_MODEL_INSTEAD_CHATGPT={s.use_own_model_instead_chatgpt}"
        ),
    )


if __name__ == "__main__":
    main()
