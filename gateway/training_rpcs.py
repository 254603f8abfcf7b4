"""The training RPCs: checked at the gateway (the interceptor), then forwarded to the trainer.

The gateway's messages (gateway.proto, `GatewayService<Rpc>Request`) and the trainer's
(trainer.proto) are twins with the same field names and numbers, so one is converted to the other
by its wire bytes, here and only here. tests/test_training_messages.py pins that they stay twins.
"""

from __future__ import annotations

import logging

import grpc

from foodcal.rpc.errors import abort, abort_with, details_of
from foodcal.v1 import gateway_pb2 as gw
from foodcal.v1 import trainer_pb2 as tr
from gateway.deadlines import Budget

log = logging.getLogger(__name__)

TRAINER_TIMEOUT_S = 30.0  # a forwarded unary call, when the caller set no shorter deadline

FORWARDED = (
    "StartTrainingRun",
    "WatchTrainingRun",
    "ListModelVersions",
    "RollbackModel",
    "GetQualityReport",
    "EndChallenger",
)


def twins(rpc: str) -> tuple[tuple[type, type], tuple[type, type]]:
    """((gateway request, trainer request), (gateway response, trainer response)) of one RPC."""
    return (
        (getattr(gw, f"GatewayService{rpc}Request"), getattr(tr, f"{rpc}Request")),
        (getattr(gw, f"GatewayService{rpc}Response"), getattr(tr, f"{rpc}Response")),
    )


def twin(message, to):
    """`message` as its twin type `to` (see the module's docstring)."""
    return to.FromString(message.SerializeToString())


async def trainer_failed(context: grpc.aio.ServicerContext, error: grpc.aio.AioRpcError) -> None:
    """A trainer call failed: its own status and details pass through, except our misconfiguration."""
    code = error.code()
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        log.error("the trainer refused the gateway's INTERNAL_TOKEN")  # the client's token was fine
        await abort(
            context,
            grpc.StatusCode.INTERNAL,
            "the trainer refused this gateway's INTERNAL_TOKEN: every service needs the same one",
            "INTERNAL_TOKEN_REFUSED",
        )
    status = details_of(error)
    if status is not None:
        await abort_with(context, status)
    if code == grpc.StatusCode.UNAVAILABLE:
        await abort(
            context, code, "the trainer is unavailable; try again shortly", "TRAINER_UNAVAILABLE", 2.0
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        await abort(context, code, "the trainer did not answer in time", "TRAINER_TIMEOUT")
    await context.abort(code, error.details() or "the trainer failed")


class TrainingForwarder:
    """GatewayServicer's training RPCs; needs `self.trainer` (a TrainerServiceStub) and
    `self.internal_metadata`."""

    async def _forward(self, rpc: str, request, context):
        (_, trainer_request), (response, _) = twins(rpc)
        try:
            timeout = Budget.of(context).timeout(TRAINER_TIMEOUT_S)
            answer = await getattr(self.trainer, rpc)(
                twin(request, trainer_request), metadata=self.internal_metadata, timeout=timeout
            )
        except grpc.aio.AioRpcError as error:
            await trainer_failed(context, error)
        return twin(answer, response)

    async def StartTrainingRun(self, request, context):
        return await self._forward("StartTrainingRun", request, context)

    async def ListModelVersions(self, request, context):
        return await self._forward("ListModelVersions", request, context)

    async def RollbackModel(self, request, context):
        return await self._forward("RollbackModel", request, context)

    async def GetQualityReport(self, request, context):
        return await self._forward("GetQualityReport", request, context)

    async def EndChallenger(self, request, context):
        return await self._forward("EndChallenger", request, context)

    async def WatchTrainingRun(self, request, context):
        (_, trainer_request), (response, _) = twins("WatchTrainingRun")
        try:
            async for event in self.trainer.WatchTrainingRun(
                twin(request, trainer_request),
                metadata=self.internal_metadata,
                timeout=Budget.of(context).timeout_or_none(),
            ):
                yield twin(event, response)
        except grpc.aio.AioRpcError as error:
            await trainer_failed(context, error)
