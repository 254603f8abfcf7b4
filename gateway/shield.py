"""No internal detail in a client's error: an exception our code did not turn into a status
becomes INTERNAL with a fixed message (the traceback goes to the gateway's log, with the request
id), instead of gRPC's default UNKNOWN "Unexpected <class>: <text>" that can carry paths and hosts.
"""

from __future__ import annotations

import asyncio
import inspect
import logging

import grpc

from foodcal.rpc.errors import abort

log = logging.getLogger(__name__)

MESSAGE = "internal error in the gateway; it was logged (quote your x-request-id when reporting it)"


async def _internal(context: grpc.aio.ServicerContext) -> None:
    log.exception("unexpected error while serving a call")
    await abort(context, grpc.StatusCode.INTERNAL, MESSAGE, "INTERNAL_ERROR")


def shield(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The same handler, with unexpected exceptions turned into a plain INTERNAL."""
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        behavior = handler.unary_unary

        async def unary(request, context):
            try:
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception:
                await _internal(context)

        return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
    if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
        stream = handler.unary_stream

        async def server_stream(request, context):
            try:
                async for response in stream(request, context):
                    yield response
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception:
                await _internal(context)

        return grpc.unary_stream_rpc_method_handler(server_stream, **kwargs)
    return handler
