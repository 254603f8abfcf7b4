"""AnalyzeMeal: validate, classify, predict, label according to the flags, persist."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from sqlalchemy import bindparam, insert, select
from sqlalchemy.engine import Connection

from foodcal.domain.calibration import Calibration
from foodcal.settings import Settings
from foodcal.store import Database, ImageStore, LabelStatus, Sample
from foodcal.store.images import Staged
from gateway.budget import DailyBudget, next_midnight
from gateway.challenger import Challengers, Predictions
from gateway.deadlines import Budget
from gateway.label_policy import Decision, PolicySettings, decide
from gateway.label_queue import LabelCall, label_request
from gateway.label_results import RetryPolicy, apply_failure, apply_label
from gateway.plate_photos import INLINE_HASH_BYTES, Angles, checked, discard, discarded, other_angles
from gateway.policy_inputs import Calibrations
from gateway.portion import Portion, own_portion
from gateway.shown import CHATGPT, OWN_MODEL, REFERENCE
from model_store.torchserve_client import Classification, NutritionPrediction, TorchServeClient
from model_store.worker.photos import ValidImage

log = logging.getLogger(__name__)


# Kept from the caller's deadline for storing the sample and answering after the label call.
ANSWER_RESERVE_S = 0.5
# Built once, run on a Core connection: an ORM session and a statement built per request cost
# more CPU than the writes themselves (~1 ms per AnalyzeMeal with the request id's claim and answer).
_SAMPLES = Sample.__table__
# The same owner's: whether another client sent this photo is none of the caller's business.
_SAME_PHOTO = (
    select(_SAMPLES.c.id)
    .where(
        _SAMPLES.c.image_sha256 == bindparam("sha256"),
        _SAMPLES.c.owner.is_not_distinct_from(bindparam("owner")),
    )
    .limit(1)
)
_INSERT_SAMPLE = insert(_SAMPLES)


@dataclass
class OwnRange:
    low: tuple[float, ...]
    high: tuple[float, ...]
    level: float
    calibrated: bool
    group: str


@dataclass
class Analysis:
    sample: Sample
    classification: Classification
    prediction: NutritionPrediction
    shown: tuple[float, float, float, float]
    duplicate_image: bool
    own_range: OwnRange
    own_portion: Portion | None = None


class Analyzer:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        images: ImageStore,
        torchserve: TorchServeClient,
        call_labeler: LabelCall,
        policy: RetryPolicy,
        wake_queue,
    ) -> None:
        self.settings, self.db, self.images, self.torchserve = settings, db, images, torchserve
        self.call_labeler, self.policy, self.wake_queue = call_labeler, policy, wake_queue
        self.calibrations = Calibrations(db)
        self.challengers = Challengers(db, torchserve, grace_s=settings.rollout_challenger_grace_s)
        self.budget = DailyBudget(db, settings.chatgpt_daily_budget_usd)
        self.label_policy = PolicySettings.from_settings(settings)

    async def analyze(
        self,
        image: bytes,
        filename: str,
        budget: Budget = Budget.unlimited(),
        owner: str | None = None,
        note: str = "",
        image_sha256: str | None = None,
        on_insert: Callable[[Connection, Analysis], None] | None = None,
        more_images: tuple[bytes, ...] = (),
        meal_id: str = "",
    ) -> Analysis:
        """`budget`: what is left of the caller's deadline; every inner call gets at most that.
        `owner`: the caller's identity (gateway/auth.py), stored with the sample.
        `note`: the person's note, already cleaned (foodcal.domain.notes), sent to ChatGPT with the photo.
        `image_sha256`: the photo's, when the caller already hashed it: one hash per request.
        `on_insert(connection, analysis)`: writes in the sample's own transaction (a request id's answer:
        both are stored or neither, in one commit).
        `more_images`: other angles of the same plate (checked, classified with it, stored with it).
        `meal_id`: the client's meal this plate belongs to."""
        if image_sha256 or len(image) <= INLINE_HASH_BYTES:  # headers, and a small photo's hash
            valid, sha256 = checked(image, image_sha256)  # raises InvalidImage
        else:  # hashing a 12 MP photo takes milliseconds: off the event loop
            valid, sha256 = await asyncio.to_thread(checked, image, image_sha256)
        angles = await asyncio.to_thread(other_angles, more_images, sha256) if more_images else []
        # Written while the model runs, off the critical path; published (one rename) only once the
        # model has answered: a failed request leaves no orphan photo.
        staging = asyncio.ensure_future(asyncio.to_thread(self.images.stage, image, sha256))
        more = [asyncio.ensure_future(asyncio.to_thread(self.images.stage, p, h)) for p, h in angles]
        try:
            analysis = await self._analyze(
                image, valid, sha256, staging, filename, budget, owner, note, on_insert,
                Angles([h for _, h in angles], more, tuple(more_images)), meal_id,
            )  # fmt: skip
        except asyncio.CancelledError:
            for stage in (staging, *more):
                stage.add_done_callback(discard)
            raise
        except BaseException:
            for stage in (staging, *more):
                await discarded(stage)
            raise
        return analysis

    async def _analyze(
        self,
        image: bytes,
        valid: ValidImage,
        sha256: str,
        staging: asyncio.Future,
        filename: str,
        budget: Budget,
        owner: str | None,
        note: str,
        on_insert: Callable[[Connection, Analysis], None] | None,
        angles: Angles,
        meal_id: str,
    ) -> Analysis:
        limit = self.settings.torchserve_timeout_s
        classification = await self.torchserve.classify(
            image, timeout=budget.timeout(limit), more=angles.images
        )

        def timeout() -> float:
            return budget.timeout(limit)

        if self.settings.use_trained_model:  # the served version, and the live challenger if any
            predictions = await self.challengers.predict(classification, sha256, timeout)
        else:  # the reference table only: nothing to compare it with
            embedding, probabilities = classification.embedding, classification.probabilities
            table = await self.torchserve.predict_nutrition(embedding, probabilities, 0, timeout=timeout())
            predictions = Predictions(table, None)
        prediction, paired = predictions.answered, predictions.paired
        sample = Sample(
            image_sha256=sha256,
            image_path="",  # set when the photo is stored: once the model server has answered
            filename=filename[:255],
            width=valid.width,
            height=valid.height,
            classifier_version=classification.classifier,
            dishes=[[label, p] for label, p in classification.dishes],
            embedding=classification.embedding.astype("<f4").tobytes(),
            class_probabilities=classification.probabilities.astype("<f4").tobytes(),
            pred_model_version=prediction.version,
            owner=owner,
            meal_id=meal_id,
            more_image_sha256s=angles.sha256s or None,
        )
        sample.set_values("pred", prediction.values)
        if paired is not None:
            sample.set_values("paired", paired.values)
            sample.paired_model_version = paired.version
        sample.note = note
        portion = own_portion(classification.dishes, prediction.version, prediction.values[0])
        if portion is not None:
            sample.pred_portion_g, sample.pred_portion_basis = portion.grams, portion.basis
        sample.top1_dish = classification.dishes[0][0][:100]
        calibration = await self.calibrations.of_version(prediction.version)
        own_range = self._range(calibration, prediction, classification)
        decision = await self._decide(calibration, prediction, classification, own_range, note)
        sample.label_policy_reason = decision.reason if self.settings.use_chatgpt else "USE_CHATGPT=false"
        sample.label_uncertainty = decision.uncertainty
        shown, source = prediction.values, OWN_MODEL if prediction.version > 0 else REFERENCE
        if not self.settings.use_chatgpt or not decision.ask:
            sample.label_status = LabelStatus.NOT_REQUESTED
        elif await self.budget.exhausted():  # fetched after midnight UTC, never dropped
            sample.label_status = LabelStatus.PENDING
            sample.label_next_attempt_at = next_midnight(sample.created_at)
            sample.label_policy_reason += "; today's ChatGPT budget is spent: waits for midnight UTC"
        elif self.settings.use_own_model_instead_chatgpt:
            sample.label_status = LabelStatus.PENDING  # collected in the background
        else:  # the labeler reads the store: every angle first
            await asyncio.to_thread(self._store, sample, await staging, await angles.staged())
            await self._label_now(sample, budget)
            label = sample.values("label")
            if label is not None:
                shown, source = label, CHATGPT
        sample.shown_source = source
        analysis = Analysis(sample, classification, prediction, shown, False, own_range, portion)
        await asyncio.to_thread(
            self._store_and_insert, analysis, await staging, await angles.staged(), on_insert
        )
        if sample.label_status == LabelStatus.PENDING:
            self.wake_queue()
        log.info(
            "sample %s: %s (%.2f), v%d, label %s",
            sample.id, classification.dishes[0][0], classification.dishes[0][1], prediction.version,
            sample.label_status,
        )  # fmt: skip
        return analysis

    def _range(self, calibration: Calibration, prediction, classification) -> OwnRange:
        low, high, group = calibration.ranges(prediction.values, classification.probabilities)
        return OwnRange(tuple(low), tuple(high), calibration.level, calibration.calibrated, group)

    async def _decide(
        self, calibration: Calibration, prediction, classification, own_range, note: str = ""
    ) -> Decision:
        dish, top1 = classification.dishes[0]
        calories = prediction.values[0]
        half_width = (own_range.high[0] - own_range.low[0]) / 2
        return decide(
            self.label_policy,
            top1_probability=float(top1),
            dish_labels=await self.calibrations.dish_labels(dish[:100]),
            relative_width=half_width / max(calories, calibration.denominators[0], 1e-6),
            explore_draw=random.random(),
            has_note=bool(note),
        )

    async def _label_now(self, sample: Sample, budget: Budget) -> None:
        """Synchronous mode; any failure, or a label slower than the caller's deadline allows,
        leaves the label pending for the background worker."""
        request = label_request(sample)
        try:
            response = await self.call_labeler(request, timeout=budget.timeout_or_none(ANSWER_RESERVE_S))
        except grpc.aio.AioRpcError as error:
            apply_failure(sample, error.code(), error.details() or "", self.policy)
            return
        apply_label(sample, response)

    @staticmethod
    def _store(sample: Sample, staged: Staged, angles: list[Staged]) -> None:
        for angle in angles:  # before the photo that names the sample's: a stored sample has all
            angle.publish()  # raises ImageStorageError
        sample.image_path = staged.publish().path

    def _store_and_insert(
        self,
        analysis: Analysis,
        staged: Staged,
        angles: list[Staged],
        on_insert: Callable[[Connection, Analysis], None] | None,
    ) -> None:
        """The photo (unless stored already for the labeler), then the sample, in one thread hop;
        `duplicate_image` when an earlier sample of the same owner has the same photo (decided by
        samples, not files)."""
        sample = analysis.sample
        if not sample.image_path:
            self._store(sample, staged, angles)
        with self.db.transaction() as connection:
            same = {"sha256": sample.image_sha256, "owner": sample.owner}
            earlier = connection.execute(_SAME_PHOTO, same).first()
            analysis.duplicate_image = earlier is not None
            connection.execute(_INSERT_SAMPLE, sample.model_dump())
            if on_insert is not None:
                on_insert(connection, analysis)
