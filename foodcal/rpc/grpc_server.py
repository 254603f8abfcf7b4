"""gRPC server plumbing shared by every service: auth, health, reflection, graceful shutdown."""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from foodcal.rpc.grpc_metrics import MetricsInterceptor

log = logging.getLogger(__name__)

# Health and reflection stay open so probes and `grpcurl list` work without a token.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def message_size_options(max_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_bytes),
        ("grpc.max_send_message_length", max_bytes),
    ]


def token_matches(presented: str, valid_tokens: Iterable[str]) -> bool:
    """Constant-time comparison against every token, without an early exit."""
    matched = False
    for token in valid_tokens:
        matched |= hmac.compare_digest(presented.encode(), token.encode())
    return matched


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ").strip()
    return None


async def _unauthenticated(context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")


def deny_like(
    handler: grpc.RpcMethodHandler,
    refuse: Callable[[grpc.aio.ServicerContext], Awaitable[None]] = _unauthenticated,
) -> grpc.RpcMethodHandler:
    """A handler of the same call type as `handler` whose only act is `refuse` (which aborts)."""

    async def deny(_request, context: grpc.aio.ServicerContext):
        await refuse(context)

    async def deny_stream(_request, context: grpc.aio.ServicerContext):
        await refuse(context)
        yield  # pragma: no cover  (makes this an async generator)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(deny_stream, **kwargs)
    return grpc.unary_unary_rpc_method_handler(deny, **kwargs)


class ReflectionServicer(reflection.aio.ReflectionServicer):
    """Reflection that also resolves `package.Service.Method` to the service's file.

    Python's descriptor pool does not find method symbols (grpc/grpc#34743), so
    `grpcurl describe foodcal.v1.GatewayService.AnalyzeMeal` would answer "Symbol not found".
    """

    def _file_containing_symbol(self, request, fully_qualified_name):
        response = super()._file_containing_symbol(request, fully_qualified_name)
        if not response.HasField("error_response"):
            return response
        service_name, _, method = fully_qualified_name.rpartition(".")
        try:
            service = self._pool.FindServiceByName(service_name)
        except KeyError:
            return response
        if method not in service.methods_by_name:
            return response
        return super()._file_containing_symbol(request, service_name)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Aborts with UNAUTHENTICATED unless `authorization: Bearer <token>` names a valid token."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self._tokens = tuple(tokens)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        token = bearer_token(handler_call_details.invocation_metadata)
        if token is not None and token_matches(token, self._tokens):
            return handler
        log.warning("refused %s: missing or invalid token", handler_call_details.method)
        return deny_like(handler)


@dataclass(frozen=True)
class ServerTLS:
    """PEM certificate chain and key; with `client_ca`, callers must present a certificate it signed."""

    cert_chain: bytes
    key: bytes
    client_ca: bytes | None = None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


@dataclass
class ServiceSpec:
    """What one service adds to a server: its servicers and the full names reflection lists."""

    name: str
    register: Callable[[grpc.aio.Server], None]
    service_names: Sequence[str]
    tokens: Sequence[str]
    max_message_bytes: int
    on_start: Callable[[], Awaitable[None]] | None = None
    on_stop: Callable[[], Awaitable[None]] | None = None
    health: health.aio.HealthServicer = field(default_factory=health.aio.HealthServicer)
    # Replaces the plain bearer-token check (the gateway's roles: gateway/auth.py).
    auth: grpc.aio.ServerInterceptor | None = None
    # Serve TLS instead of plaintext.
    tls: ServerTLS | None = None


class RunningServer:
    """A started aio server on a bound port; `stop()` drains in-flight calls."""

    def __init__(self, spec: ServiceSpec, server: grpc.aio.Server, port: int) -> None:
        self.spec, self.server, self.port = spec, server, port

    async def stop(self, grace_s: float = 5.0) -> None:
        await self.spec.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        if self.spec.on_stop is not None:
            await self.spec.on_stop()
        log.info("%s stopped", self.spec.name)


async def start_server(spec: ServiceSpec, host: str, port: int) -> RunningServer:
    server = grpc.aio.server(
        # the metrics interceptor first, so refusals are counted too
        interceptors=[MetricsInterceptor(), spec.auth or BearerTokenInterceptor(spec.tokens)],
        options=message_size_options(spec.max_message_bytes),
    )
    spec.register(server)
    health_pb2_grpc.add_HealthServicer_to_server(spec.health, server)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        ReflectionServicer([*spec.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]), server
    )
    if spec.tls is not None:
        bound = server.add_secure_port(f"{host}:{port}", spec.tls.credentials())
    else:
        bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise SystemExit(f"{spec.name}: could not bind {host}:{port} (port in use?)")
    await server.start()
    if spec.on_start is not None:
        await spec.on_start()
    for name in (*spec.service_names, ""):
        await spec.health.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("%s serving on %s:%d (%s)", spec.name, host, bound, "TLS" if spec.tls else "plaintext")
    return RunningServer(spec, server, bound)


async def serve_until_signalled(spec: ServiceSpec, host: str, port: int) -> None:
    """Entry point body of every service: serve until SIGTERM or SIGINT, then shut down gracefully."""
    running = await start_server(spec, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("%s: shutdown requested", spec.name)
    await running.stop()
