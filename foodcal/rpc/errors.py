"""Errors with a status code, a message a person can act on, and details a program can act on.

Details travel as a `google.rpc.Status` in the `grpc-status-details-bin` trailer (grpcio-status):
always an `ErrorInfo` (domain `foodcal`, a stable UPPER_SNAKE `reason`, metadata), and a
`RetryInfo` where trying again later can succeed. Clients read them with `details_of(error)`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "foodcal"
DETAILS_KEY = "grpc-status-details-bin"


def rich_status(
    code: grpc.StatusCode, message: str, reason: str, retry_after_s: float | None = None, **metadata: object
) -> status_pb2.Status:
    status = status_pb2.Status(code=code.value[0], message=message)
    info = error_details_pb2.ErrorInfo(
        reason=reason, domain=DOMAIN, metadata={key: str(value) for key, value in metadata.items()}
    )
    status.details.add().Pack(info)
    if retry_after_s is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromTimedelta(timedelta(seconds=retry_after_s))
        status.details.add().Pack(retry)
    return status


async def abort(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    reason: str,
    retry_after_s: float | None = None,
    **metadata: object,
) -> NoReturn:
    await abort_with(context, rich_status(code, message, reason, retry_after_s, **metadata))


async def abort_with(context: grpc.aio.ServicerContext, rich: status_pb2.Status) -> NoReturn:
    status = rpc_status.to_status(rich)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def details_of(error: grpc.aio.AioRpcError | grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status a server attached to a failed call, if any."""
    for key, value in error.trailing_metadata() or ():
        if key == DETAILS_KEY:
            return status_pb2.Status.FromString(value)
    return None


def error_info(status: status_pb2.Status | None) -> error_details_pb2.ErrorInfo | None:
    return _unpack(status, error_details_pb2.ErrorInfo)


def retry_info(status: status_pb2.Status | None) -> error_details_pb2.RetryInfo | None:
    return _unpack(status, error_details_pb2.RetryInfo)


def _unpack(status, kind):
    for detail in status.details if status is not None else ():
        detail: any_pb2.Any
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            return message
    return None
