"""TrainerService: translates between protobuf and the run manager / version store."""

from __future__ import annotations

import asyncio
import functools
import logging

import grpc

from foodcal.rpc.errors import abort
from foodcal.store import RunStatus, TrainingRunRow
from foodcal.store.db import DatabaseUnavailable
from foodcal.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from model_store.torchserve_client import ModelServerError
from trainer import quality
from trainer.backfill import backfill
from trainer.messages import epoch_proto, run_proto, version_proto
from trainer.runs import Refused, RunManager
from trainer.swap_lock import SwapBusy
from trainer.training import EpochResult, TrainingParameters
from trainer.versions import VersionStore

log = logging.getLogger(__name__)

_FINISHED = (RunStatus.DEPLOYED, RunStatus.CHALLENGER, RunStatus.NOT_DEPLOYED, RunStatus.FAILED)


RETRY_AFTER_S = 1.0
_REFUSALS = {  # Refused.kind -> (code, ErrorInfo reason, RetryInfo delay)
    "exists": (grpc.StatusCode.ALREADY_EXISTS, "RUN_ACTIVE", None),
    "unavailable": (grpc.StatusCode.UNAVAILABLE, "TRAINER_SHUTTING_DOWN", 5.0),
    "precondition": (grpc.StatusCode.FAILED_PRECONDITION, "NOT_ENOUGH_TRAINING_DATA", None),
}


async def _database_unavailable(context) -> None:
    await abort(
        context,
        grpc.StatusCode.UNAVAILABLE,
        "the trainer's database is unavailable; try again shortly",
        "DATABASE_UNAVAILABLE",
        RETRY_AFTER_S,
    )


def _unary(method):
    """A lost database is UNAVAILABLE (with RetryInfo), never UNKNOWN."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except DatabaseUnavailable:
            await _database_unavailable(context)

    return wrapper


def _streaming(method):
    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            async for response in method(self, request, context):
                yield response
        except DatabaseUnavailable:
            await _database_unavailable(context)

    return wrapper


async def _model_server_failed(context, error: ModelServerError) -> None:
    if isinstance(error, SwapBusy):
        await abort(context, grpc.StatusCode.UNAVAILABLE, str(error), "SWAP_IN_PROGRESS", 2.0)
    if error.unavailable:
        await abort(
            context,
            grpc.StatusCode.UNAVAILABLE,
            f"the model server failed: {error}",
            "MODEL_SERVER_UNAVAILABLE",
            RETRY_AFTER_S,
        )
    await abort(context, grpc.StatusCode.INTERNAL, f"the model server failed: {error}", "MODEL_SERVER_FAILED")


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, runs: RunManager, versions: VersionStore, torchserve, images) -> None:
        self.runs, self.versions, self.torchserve, self.images = runs, versions, torchserve, images

    @_unary
    async def StartTrainingRun(self, request, context):
        values = {
            field: getattr(request, field)
            for field in ("epochs", "batch_size", "learning_rate", "weight_decay", "patience", "hidden_size")
            if request.HasField(field)
        }
        try:
            params = TrainingParameters(**values)
        except ValueError as error:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error), "INVALID_PARAMETERS")
        try:
            run = await self.runs.start(params)
        except Refused as refused:
            code, reason, retry_after_s = _REFUSALS[refused.kind]
            await abort(context, code, str(refused), reason, retry_after_s)
        except ModelServerError as error:
            await _model_server_failed(context, error)
        return trainer_pb2.StartTrainingRunResponse(
            run_id=run.id, parameters=common_pb2.TrainingParameters(**params.as_dict())
        )

    async def _run(self, context, run_id: str) -> TrainingRunRow:
        run = await asyncio.to_thread(self.runs.get, run_id) if run_id else None
        if run is None:
            await abort(
                context, grpc.StatusCode.NOT_FOUND, f"no training run with id {run_id!r}", "RUN_NOT_FOUND"
            )
        return run

    @_unary
    async def GetTrainingRun(self, request, context):
        return trainer_pb2.GetTrainingRunResponse(run=run_proto(await self._run(context, request.run_id)))

    @_streaming
    async def WatchTrainingRun(self, request, context):
        """Every epoch so far, then each new one as it ends, then the outcome."""
        queue = self.runs.subscribe(request.run_id)  # before reading, so no epoch falls in between
        try:
            run = await self._run(context, request.run_id)
            sent = -1  # epoch 0 is the closed-form start
            for epoch in run.epochs:
                sent = epoch["epoch"]
                yield trainer_pb2.WatchTrainingRunResponse(
                    event=common_pb2.TrainingEvent(epoch=epoch_proto(epoch))
                )
            while run.status not in _FINISHED:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=5.0)
                except TimeoutError:  # a run that ended in another process: re-read it
                    run = await asyncio.to_thread(self.runs.get, request.run_id)
                    continue
                if isinstance(event, EpochResult):
                    if event.epoch > sent:
                        sent = event.epoch
                        yield trainer_pb2.WatchTrainingRunResponse(
                            event=common_pb2.TrainingEvent(epoch=epoch_proto(event))
                        )
                else:
                    run = event
            yield trainer_pb2.WatchTrainingRunResponse(event=common_pb2.TrainingEvent(outcome=run_proto(run)))
        finally:
            self.runs.unsubscribe(request.run_id, queue)

    @_unary
    async def ListTrainingRuns(self, request, context):
        limit = request.page_size or 20
        if not 1 <= limit <= 100:
            await abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "page_size must be 1 to 100", "INVALID_PAGE_SIZE"
            )
        runs = await asyncio.to_thread(self.runs.list, limit)
        return trainer_pb2.ListTrainingRunsResponse(runs=[run_proto(r) for r in runs])

    @_unary
    async def ListModelVersions(self, request, context):
        rows = await asyncio.to_thread(self.versions.all)
        served = next((row.version for row in rows if row.served), 0)
        return trainer_pb2.ListModelVersionsResponse(
            versions=[version_proto(r) for r in rows], served_version=served
        )

    @_unary
    async def RollbackModel(self, request, context):
        try:
            served, previous = await self.runs.rollouts.rollback(request.version)
        except LookupError as error:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(error), "VERSION_NOT_FOUND")
        except FileNotFoundError as error:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(error), "ARCHIVE_MISSING")
        except ModelServerError as error:
            await _model_server_failed(context, error)
        log.info("rolled back: v%d served (was v%d)", served, previous)
        return trainer_pb2.RollbackModelResponse(served_version=served, previous_version=previous)

    @_unary
    async def EndChallenger(self, request, context):
        version = request.version if request.HasField("version") else None
        try:
            ended = await self.runs.rollouts.end_challenger(version)
        except LookupError as error:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(error), "NO_LIVE_CHALLENGER")
        except ModelServerError as error:
            await _model_server_failed(context, error)
        return trainer_pb2.EndChallengerResponse(
            version=ended.version, baseline_version=ended.baseline_version
        )

    @_unary
    async def BackfillEmbeddings(self, request, context):
        batch = request.batch_size or 16
        if not 1 <= batch <= 256:
            await abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "batch_size must be 1 to 256", "INVALID_BATCH_SIZE"
            )
        try:
            updated, classifier = await backfill(self.runs.db, self.torchserve, self.images, batch)
        except ModelServerError as error:
            await _model_server_failed(context, error)
        return trainer_pb2.BackfillEmbeddingsResponse(updated_samples=updated, classifier=classifier)

    @_unary
    async def GetQualityReport(self, request, context):
        worst = request.worst_dishes if request.HasField("worst_dishes") else quality.WORST_DISHES
        least = request.min_dish_samples if request.HasField("min_dish_samples") else quality.MIN_DISH_SAMPLES
        if not (0 <= worst <= 101 and 1 <= least <= 10_000):
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "worst_dishes must be 0 to 101 and min_dish_samples 1 to 10000",
                "INVALID_REPORT_OPTIONS",
            )
        try:
            classifier = await self.runs.current_classifier()
        except ModelServerError:  # the report needs no TorchServe: the newest embeddings' classifier
            classifier = await asyncio.to_thread(quality.newest_classifier, self.runs.db)
        rows = await asyncio.to_thread(self.versions.all)
        reports = await asyncio.to_thread(
            quality.report, self.runs.db, rows, self.versions.model, classifier, least
        )
        return quality.report_proto(reports, worst, least)
