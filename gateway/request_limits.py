"""What a call must meet before its message is parsed or any work starts: a size per RPC for the
whole message, and (for a client) a token bucket shared by its calls.

AnalyzeMeal is left to its own checks: its message is the photo (GRPC_MAX_MESSAGE_BYTES is its
bound) and it spends its own, costlier bucket (CLIENT_RATE_*: gateway/service.py), so its hot path
keeps a single database write.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from google.protobuf.message import DecodeError

from foodcal.rpc.errors import abort
from foodcal.store.db import DatabaseUnavailable
from gateway.auth import Caller
from gateway.errors import translate_errors
from gateway.rate_limit import RateLimiter

log = logging.getLogger(__name__)

# The largest serialized request each RPC takes, with room to spare: CorrectSample is a sample id,
# four totals and at most 20 items of at most 100 characters (4 bytes each in UTF-8) each.
MAX_REQUEST_BYTES = {
    "GetSample": 1024,
    "ListSamples": 1024,
    "GetStats": 256,
    "GetMeal": 256,
    "CorrectSample": 32 * 1024,
    "GetDailyTotals": 1024,
    "ExportSamples": 256,
    "DeleteSample": 1024,
}
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024  # the admin RPCs: a few numbers or an id each
UNLIMITED = frozenset({"AnalyzeMeal"})


async def spend(context: grpc.aio.ServicerContext, limiter: RateLimiter, key: str, what: str) -> None:
    """One call of `key`'s bucket, or RESOURCE_EXHAUSTED with the wait in RetryInfo."""
    try:
        wait_s = await asyncio.to_thread(limiter.take, key)
    except DatabaseUnavailable as error:
        await translate_errors(context, error)
    if wait_s is not None:
        log.warning("rate limited %s for %.1f s", key, wait_s)
        await abort(
            context,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"too many {what} for this token ({limiter}); retry in {wait_s:.1f} s",
            "RATE_LIMITED",
            wait_s,
            per_minute=limiter.per_minute,
            burst=limiter.burst,
        )


def calls_key(caller: Caller) -> str:
    """The calls bucket's row: apart from the caller's AnalyzeMeal bucket (its identity)."""
    return f"{caller.identity}/calls"


class RequestLimits:
    def __init__(self, calls: RateLimiter | None) -> None:
        self.calls = calls

    def wrap(self, handler: grpc.RpcMethodHandler, name: str, caller: Caller) -> grpc.RpcMethodHandler:
        """`handler` taking the raw bytes: checked for size, then the client's bucket, then parsed."""
        if name in UNLIMITED or (handler.unary_unary is None and handler.unary_stream is None):
            return handler
        max_bytes = MAX_REQUEST_BYTES.get(name, DEFAULT_MAX_REQUEST_BYTES)
        parse = handler.request_deserializer
        limiter = None if caller.admin else self.calls

        async def checked(raw: bytes, context: grpc.aio.ServicerContext):
            if len(raw) > max_bytes:
                await abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"a {name} request is at most {max_bytes} bytes (got {len(raw)})",
                    "REQUEST_TOO_LARGE",
                    method=name,
                    max_bytes=max_bytes,
                )
            if limiter is not None and limiter.enabled:
                await spend(context, limiter, calls_key(caller), "calls")
            try:
                return parse(raw)
            except DecodeError:
                await abort(
                    context, grpc.StatusCode.INVALID_ARGUMENT, f"not a {name} request", "MALFORMED_REQUEST"
                )

        serializer = handler.response_serializer
        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            async def unary(raw: bytes, context: grpc.aio.ServicerContext):
                return await behavior(await checked(raw, context), context)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=None, response_serializer=serializer
            )
        stream = handler.unary_stream  # ExportSamples, WatchTrainingRun: one check for the whole stream

        async def server_stream(raw: bytes, context: grpc.aio.ServicerContext):
            async for response in stream(await checked(raw, context), context):
                yield response

        return grpc.unary_stream_rpc_method_handler(
            server_stream, request_deserializer=None, response_serializer=serializer
        )
