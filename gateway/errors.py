"""Our exceptions as gRPC status codes with messages a person can act on, and google.rpc details
(ErrorInfo, RetryInfo) a program can act on: one place for the gateway's own failures."""

from __future__ import annotations

import asyncio

import grpc

from foodcal.domain.notes import InvalidNote
from foodcal.rpc.errors import abort
from foodcal.store.db import DatabaseUnavailable
from foodcal.store.images import ImageStorageError
from gateway.plate_photos import InvalidAngles
from model_store.torchserve_client import ModelServerError
from model_store.worker.photos import InvalidImage

RETRY_AFTER_S = 1.0


async def on_thread(context: grpc.aio.ServicerContext, work):
    """`work()` on a worker thread; the database's failures as status codes."""
    try:
        return await asyncio.to_thread(work)
    except DatabaseUnavailable as error:
        await translate_errors(context, error)


async def in_session(context: grpc.aio.ServicerContext, db, read):
    """`read(session)` in one database session on a worker thread; failures as status codes."""

    def work():
        with db.session() as session:
            return read(session)

    return await on_thread(context, work)


async def translate_errors(context: grpc.aio.ServicerContext, error: Exception) -> None:
    """One place that turns our exceptions into status codes with messages a person can act on,
    and google.rpc details (ErrorInfo, RetryInfo) a program can act on."""
    if isinstance(error, InvalidNote):
        await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error), "NOTE_TOO_LONG")
    if isinstance(error, InvalidImage):
        await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error), "INVALID_IMAGE")
    if isinstance(error, InvalidAngles):
        await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error), "INVALID_ANGLES")
    if isinstance(error, ModelServerError):
        message = f"the model server failed: {error}"
        if error.timed_out:
            await abort(
                context, grpc.StatusCode.DEADLINE_EXCEEDED, message, "MODEL_SERVER_TIMEOUT", RETRY_AFTER_S
            )
        if error.unavailable:
            await abort(
                context, grpc.StatusCode.UNAVAILABLE, message, "MODEL_SERVER_UNAVAILABLE", RETRY_AFTER_S
            )
        await abort(context, grpc.StatusCode.INTERNAL, message, "MODEL_SERVER_FAILED")
    if isinstance(error, DatabaseUnavailable):
        await abort(
            context,
            grpc.StatusCode.UNAVAILABLE,
            "the database is unavailable; try again shortly",
            "DATABASE_UNAVAILABLE",
            RETRY_AFTER_S,
        )
    if isinstance(error, ImageStorageError):
        await abort(
            context,
            grpc.StatusCode.UNAVAILABLE,
            f"{error}; nothing was stored",
            "IMAGE_STORE_UNAVAILABLE",
            RETRY_AFTER_S,
        )
    raise error
