"""GatewayService: translates between protobuf and the gateway's logic; the training RPCs are
forwarded (gateway/training_rpcs.py)."""

from __future__ import annotations

import asyncio
import logging

import grpc

from foodcal.domain.notes import InvalidNote, clean_note
from foodcal.rpc.errors import abort
from foodcal.store import Database, LabelStatus, Sample
from foodcal.store.db import DatabaseUnavailable
from foodcal.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, trainer_pb2_grpc
from gateway.analyze import Analysis, Analyzer
from gateway.auth import Caller, Roles
from gateway.correction_rpcs import CorrectionRPCs
from gateway.deadlines import Budget
from gateway.errors import in_session, translate_errors
from gateway.idempotency import RequestIds, idempotent
from gateway.meal_data import MealDataRPCs
from gateway.meals import MAX_MEAL_ID_CHARS
from gateway.rate_limit import RateLimiter
from gateway.request_limits import spend
from gateway.responses import analysis_response
from gateway.samples import (
    list_samples,
    own_stats,
    sample_proto,
    stats,
)
from gateway.training_rpcs import TrainingForwarder
from model_store.torchserve_client import ModelServerError, TorchServeClient

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 100
MAX_ID_CHARS = 64
MAX_PAGE_TOKEN_CHARS = 256  # the tokens issued are about 100


class GatewayServicer(
    TrainingForwarder, CorrectionRPCs, MealDataRPCs, gateway_pb2_grpc.GatewayServiceServicer
):
    def __init__(
        self,
        db: Database,
        analyzer: Analyzer,
        torchserve: TorchServeClient,
        trainer: trainer_pb2_grpc.TrainerServiceStub,
        internal_metadata,
        labeler_model: str,
        roles: Roles | None = None,
        limiter: RateLimiter | None = None,
        request_ids: RequestIds | None = None,
    ) -> None:
        self.roles, self.limiter, self.request_ids = roles, limiter, request_ids
        self.db, self.analyzer, self.torchserve = db, analyzer, torchserve
        self.trainer, self.internal_metadata, self.labeler_model = trainer, internal_metadata, labeler_model
        self.classifier = ("", False)  # (version, is demo), learnt from the classifier's answers

    def _caller(self, context) -> Caller:
        if self.roles is None:
            raise RuntimeError("GatewayServicer needs its Roles to serve callers")
        return self.roles.of_context(context)

    async def _spend(self, context, caller: Caller) -> None:
        """A client's AnalyzeMeal spends one call of its bucket; admins are not limited. (Its other
        calls spend the calls bucket: gateway/request_limits.py.)"""
        if not caller.admin and self.limiter is not None:
            await spend(context, self.limiter, caller.identity, "AnalyzeMeal calls")

    async def AnalyzeMeal(self, request, context):
        try:  # the note first: a bad one costs no rate, no request id and no hash of the photo
            note = clean_note(request.note)
        except InvalidNote as error:
            await translate_errors(context, error)
        if len(request.meal_id) > MAX_MEAL_ID_CHARS:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"meal_id is at most {MAX_MEAL_ID_CHARS} characters (got {len(request.meal_id)})",
                "MEAL_ID_TOO_LONG",
            )
        return await self._analyze(request, context, note=note)

    @idempotent  # a retry with the same request_id returns the first answer
    async def _analyze(self, request, context, note: str, image_sha256: str | None = None, remember=None):
        """`image_sha256`: the photo's, when @idempotent already hashed it (hashed once per request).
        `remember(connection, response)`: @idempotent's record of the answer, written in the sample's
        own transaction."""
        caller = self._caller(context)
        await self._spend(context, caller)
        answered: list[gateway_pb2.AnalyzeMealResponse] = []

        def answer(connection, analysis: Analysis) -> None:
            answered.append(analysis_response(analysis))
            if remember is not None:
                remember(connection, answered[0])

        try:
            analysis = await self.analyzer.analyze(
                request.image, request.filename, Budget.of(context), owner=caller.identity, note=note,
                image_sha256=image_sha256, on_insert=answer, more_images=tuple(request.more_images),
                meal_id=request.meal_id,
            )  # fmt: skip
        except Exception as error:
            await translate_errors(context, error)
        self.classifier = (analysis.classification.classifier, analysis.classification.demo)
        return answered[0]

    async def _sample(self, context, sample_id: str, caller: Caller) -> Sample:
        """The sample, if the caller may see it; another client's sample is NOT_FOUND, like none."""
        await self._check_id(context, sample_id)
        try:
            sample = await asyncio.to_thread(self._get, sample_id)
        except DatabaseUnavailable as error:
            await translate_errors(context, error)
        if sample is None or (caller.owner_filter is not None and sample.owner != caller.owner_filter):
            await abort(
                context, grpc.StatusCode.NOT_FOUND, f"no sample with id {sample_id!r}", "SAMPLE_NOT_FOUND"
            )
        return sample

    @staticmethod
    async def _check_id(context, sample_id: str) -> None:
        if not sample_id:
            await abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "sample_id is required", "SAMPLE_ID_MISSING"
            )
        if len(sample_id) > MAX_ID_CHARS:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"sample_id is at most {MAX_ID_CHARS} characters (got {len(sample_id)})",
                "SAMPLE_ID_TOO_LONG",
            )

    def _get(self, sample_id: str) -> Sample | None:
        with self.db.session() as session:
            return session.get(Sample, sample_id)

    async def GetSample(self, request, context):
        return gateway_pb2.GetSampleResponse(
            sample=sample_proto(await self._sample(context, request.sample_id, self._caller(context)))
        )

    async def ListSamples(self, request, context):
        page_size = request.page_size or 20
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"page_size must be 1 to {MAX_PAGE_SIZE}",
                "INVALID_PAGE_SIZE",
            )
        if len(request.page_token) > MAX_PAGE_TOKEN_CHARS:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"page_token is at most {MAX_PAGE_TOKEN_CHARS} characters: use one this service issued",
                "INVALID_PAGE_TOKEN",
            )
        try:
            status = LabelStatus.from_proto(request.label_status) if request.label_status else None
        except ValueError as error:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error), "INVALID_LABEL_STATUS")
        if request.corrections not in gateway_pb2.CorrectionFilter.values():
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"corrections filter {request.corrections} is not a CorrectionFilter",
                "INVALID_CORRECTION_FILTER",
            )
        owner = self._caller(context).owner_filter

        def page():
            with self.db.session() as session:
                return list_samples(
                    session,
                    page_size,
                    request.page_token,
                    status,
                    owner=owner,
                    corrections=request.corrections,
                )

        try:
            rows, next_token = await asyncio.to_thread(page)
        except ValueError as error:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error), "INVALID_PAGE_TOKEN")
        except DatabaseUnavailable as error:
            await translate_errors(context, error)
        return gateway_pb2.ListSamplesResponse(
            samples=[sample_proto(s) for s in rows], next_page_token=next_token
        )

    async def GetStats(self, request, context):
        owner = self._caller(context).owner_filter
        budget = self.analyzer.settings.chatgpt_daily_budget_usd
        response = await in_session(  # a client's stats count its own samples only
            context,
            self.db,
            lambda session: own_stats(session, owner) if owner is not None else stats(session, budget),
        )
        try:
            served = int(await self.torchserve.served_version())
            if not self.classifier[0]:  # nothing classified since start-up: ask once
                self.classifier = await self.torchserve.identify_classifier()
        except ModelServerError:
            served = None  # unknown while the model server is down: left unset
        response.served.CopyFrom(
            common_pb2.ModelVersions(
                classifier=self.classifier[0],
                classifier_is_demo=self.classifier[1],
                nutrition=served,
                labeler_model=self.labeler_model,
            )
        )
        return response
