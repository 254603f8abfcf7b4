"""The live challenger (trainer/rollout.py starts and ends it): which version answers a photo, and
the other version's prediction for the same photo, stored so its live error is known.

A challenger that fails or has just been unregistered never fails a request: the champion answers.
Nor does a slow one delay it: once the champion answered, the challenger has CHALLENGER_GRACE_S
more, then its prediction is dropped for this request (even a split photo it would have answered).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlmodel import select

from foodcal.store import Database, Rollout, RolloutMode, RolloutState
from gateway.recent import Recent
from model_store.torchserve_client import ModelServerError, NutritionPrediction, TorchServeClient

log = logging.getLogger(__name__)

# How long a read of the live challenger is reused; the trainer waits longer than this after
# retiring one before unregistering it (trainer/rollout.py RETIRE_GRACE_S).
REFRESH_S = 2.0
CHALLENGER_GRACE_S = 0.05  # the most a challenger may add to a request's latency (its setting's default)


@dataclass(frozen=True)
class Challenger:
    version: int
    champion: int
    mode: str
    split_percent: float

    def answers(self, image_sha256: str) -> bool:
        """`split`: this photo's share of requests goes to the challenger, the same photo always."""
        bucket = int(image_sha256[:8], 16) % 10_000  # sticky: the hash decides, not a random draw
        return self.mode == RolloutMode.SPLIT and bucket < self.split_percent * 100


@dataclass(frozen=True)
class Predictions:
    answered: NutritionPrediction  # the numbers this request shows
    paired: NutritionPrediction | None  # the other live version's, stored beside them


class Challengers:
    def __init__(
        self,
        db: Database,
        torchserve: TorchServeClient,
        refresh_s: float = REFRESH_S,
        grace_s: float = CHALLENGER_GRACE_S,
    ) -> None:
        self.db, self.torchserve, self.grace_s = db, torchserve, grace_s
        self._recent = Recent(refresh_s)

    async def live(self) -> Challenger | None:
        return await self._recent.get("live", self._read)

    def _read(self) -> Challenger | None:
        with self.db.session() as session:
            row = session.exec(select(Rollout).where(Rollout.state == RolloutState.CHALLENGER)).first()
        if row is None:
            return None
        return Challenger(row.version, row.baseline_version, row.mode, row.split_percent)

    async def predict(self, classification, image_sha256: str, timeout) -> Predictions:
        """The served version's prediction, and the live challenger's when there is one."""
        served = asyncio.ensure_future(
            self.torchserve.predict_nutrition(
                classification.embedding, classification.probabilities, timeout=timeout()
            )
        )
        challenger = await self.live()
        if challenger is None:
            return Predictions(await served, None)
        other = asyncio.ensure_future(
            self.torchserve.predict_nutrition(
                classification.embedding, classification.probabilities, challenger.version, timeout=timeout()
            )
        )
        try:  # the served version's failure is the request's, as without a challenger
            champion = await served
            await asyncio.wait([other], timeout=self.grace_s)
        except BaseException:
            other.cancel()
            raise
        if not other.done():
            other.cancel()
            log.warning(
                "challenger v%d did not answer within %.0f ms of the champion; dropped for this request",
                challenger.version,
                self.grace_s * 1000,
            )
            return Predictions(champion, None)
        try:
            result = other.result()
        except (ModelServerError, asyncio.CancelledError) as error:
            log.warning("challenger v%d did not answer (%s); the champion answers", challenger.version, error)
            return Predictions(champion, None)
        if champion.version == result.version:  # promoted meanwhile: nothing to pair
            return Predictions(champion, None)
        if challenger.answers(image_sha256):
            return Predictions(result, champion)
        return Predictions(champion, result)
