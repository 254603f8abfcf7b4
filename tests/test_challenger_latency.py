"""A slow challenger never holds the champion's answer back more than CHALLENGER_GRACE_S: its
prediction is dropped for that request, in shadow and in split mode alike (gateway/challenger.py)."""

import asyncio
import time
from types import SimpleNamespace

import pytest

from foodcal.store import Rollout, RolloutState
from gateway.challenger import Challengers
from model_store.torchserve_client import NutritionPrediction

SLOW_S = 3.0
BOUND_S = 0.05  # what the champion may wait for the challenger after answering (CHALLENGER_GRACE_S)


class TorchServe:
    """The served version (v0) answers at once; the challenger (v1) after `challenger_s`."""

    def __init__(self, challenger_s: float) -> None:
        self.challenger_s = challenger_s
        self.cancelled = False

    async def predict_nutrition(self, embedding, probabilities, version=None, timeout=None):
        if version is None:
            await asyncio.sleep(0.01)
            return NutritionPrediction(600.0, 20.0, 20.0, 70.0, version=0)
        try:
            await asyncio.sleep(self.challenger_s)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return NutritionPrediction(500.0, 25.0, 15.0, 60.0, version=1)


def challengers(db, mode: str, challenger_s: float) -> tuple[Challengers, TorchServe]:
    with db.session() as session:
        session.add(
            Rollout(
                version=1, baseline_version=0, mode=mode, split_percent=100.0, state=RolloutState.CHALLENGER
            )
        )
    torchserve = TorchServe(challenger_s)
    return Challengers(db, torchserve), torchserve


CLASSIFIED = SimpleNamespace(embedding=b"", probabilities=b"")
SHA = "0" * 64  # bucket 0: a split photo the challenger answers


@pytest.mark.parametrize("mode", ["shadow", "split"])
async def test_a_slow_challenger_is_dropped_soon_after_the_champion_answered(sqlite_db, mode):
    live, torchserve = challengers(sqlite_db, mode, SLOW_S)
    await live.live()  # the rollout read, cached as in a warm gateway
    started = time.monotonic()
    predictions = await live.predict(CLASSIFIED, SHA, lambda: 30.0)
    waited = time.monotonic() - started

    assert predictions.answered.version == 0 and predictions.paired is None
    assert waited < 0.01 + BOUND_S + 0.5 < SLOW_S  # generous for a busy machine
    await asyncio.sleep(0)
    assert torchserve.cancelled  # not left running


@pytest.mark.parametrize(("mode", "answered"), [("shadow", 0), ("split", 1)])
async def test_a_challenger_within_the_grace_is_still_paired(sqlite_db, mode, answered):
    live, _ = challengers(sqlite_db, mode, 0.015)
    predictions = await live.predict(CLASSIFIED, SHA, lambda: 30.0)
    assert predictions.answered.version == answered
    assert {predictions.answered.version, predictions.paired.version} == {0, 1}
