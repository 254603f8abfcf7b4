"""A gRPC server interceptor: per method and status code, RPC counts and latency; a request id per RPC.

Installed before the auth interceptor, so refused calls are counted too (`UNAUTHENTICATED`). The
request id is the caller's `x-request-id` metadata when it sends one, else a new one; it is bound
for logging (`foodcal.rpc.logs`) for the whole call.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Sequence

import grpc

from foodcal.rpc import logs
from foodcal.rpc.metrics import GRPC_HANDLED, GRPC_HANDLING, GRPC_STARTED

REQUEST_ID_KEY = "x-request-id"


def _request_id(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return logs.new_request_id()


def _status(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    code = context.code()  # set by abort() or set_code(); None when the handler said nothing
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):  # some grpc versions keep the raw integer
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    if error is None:
        return "OK"
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN"


class _Call:
    """Bookkeeping of one RPC: started, then handled with a code and a duration."""

    def __init__(self, labels: tuple[str, str, str], request_id: str) -> None:
        self.labels, self.request_id = labels, request_id

    def begin(self, context: grpc.aio.ServicerContext) -> float:
        logs.bind(request_id=self.request_id)
        GRPC_STARTED.labels(*self.labels).inc()
        return time.perf_counter()

    def end(self, context: grpc.aio.ServicerContext, start: float, error: BaseException | None) -> None:
        GRPC_HANDLED.labels(*self.labels, _status(context, error)).inc()
        GRPC_HANDLING.labels(*self.labels).observe(time.perf_counter() - start)


def _wrap_unary_response(behavior, call: _Call):
    async def wrapper(request, context):
        start, error = call.begin(context), None
        try:
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result
        except BaseException as caught:
            error = caught
            raise
        finally:
            call.end(context, start, error)

    return wrapper


def _wrap_stream_response(behavior, call: _Call):
    if inspect.isasyncgenfunction(behavior):

        async def generator(request, context):
            start, error = call.begin(context), None
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as caught:
                error = caught
                raise
            finally:
                call.end(context, start, error)

        return generator
    return _wrap_unary_response(behavior, call)  # a coroutine that writes with context.write()


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.unary_stream:
        return "server_stream"
    if handler.stream_unary:
        return "client_stream"
    if handler.stream_stream:
        return "bidi_stream"
    return "unary"


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        request_id = _request_id(handler_call_details.invocation_metadata)
        logs.bind(request_id=request_id)  # first: the auth interceptor's refusal is logged with it
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        kind = _rpc_type(handler)
        call = _Call((service, method, kind), request_id)
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if kind == "server_stream":
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream_response(handler.unary_stream, call), **kwargs
            )
        if kind == "client_stream":
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary_response(handler.stream_unary, call), **kwargs
            )
        if kind == "bidi_stream":
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream_response(handler.stream_stream, call), **kwargs
            )
        return grpc.unary_unary_rpc_method_handler(_wrap_unary_response(handler.unary_unary, call), **kwargs)
