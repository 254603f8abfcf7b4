"""The caller's deadline bounds every inner call the gateway makes."""

import asyncio
import dataclasses

import numpy as np
import pytest

from foodcal.store import ImageStore
from foodcal.v1 import common_pb2, gateway_pb2, labeler_pb2, trainer_pb2
from gateway.analyze import Analyzer
from gateway.deadlines import Budget
from gateway.label_results import RetryPolicy
from gateway.service import GatewayServicer
from model_store.torchserve_client import Classification, NutritionPrediction
from tests.conftest import auth, make_settings, photo
from tests.openai_stub import answer


class Context:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self):
        return self.remaining

    async def abort(self, code, details, trailing_metadata=()):
        raise AssertionError(f"aborted: {code} {details}")


class Recorder:
    """Stands in for TorchServe, the labeler and the trainer; records each call's timeout."""

    def __init__(self) -> None:
        self.timeouts: dict[str, float | None] = {}

    async def classify(self, image, timeout=None, more=()):
        self.timeouts["classify"] = timeout
        return Classification(
            [("pizza", 0.9)], np.zeros(48, "f4"), np.full(101, 1 / 101, "f4"), "demo@1", True
        )

    async def predict_nutrition(self, embedding, probabilities, version=None, timeout=None):
        self.timeouts["predict_nutrition"] = timeout
        return NutritionPrediction(500.0, 20.0, 20.0, 60.0, 0)

    async def call_labeler(self, request, timeout=None):
        self.timeouts["labeler"] = timeout
        return labeler_pb2.LabelMealResponse(
            label=common_pb2.Label(
                source=common_pb2.NUTRITION_SOURCE_CHATGPT,
                nutrition=common_pb2.Nutrition(calories_kcal=1, proteins_g=1, fats_g=1, carbs_g=1),
            )
        )

    async def ListModelVersions(self, request, metadata=(), timeout=None):
        self.timeouts["trainer"] = timeout
        return trainer_pb2.ListModelVersionsResponse()


def test_a_budget_is_what_is_left_of_the_deadline_capped_by_each_calls_own_limit():
    assert Budget.of(Context(None)).timeout(10.0) == 10.0  # no deadline: the call's own limit
    budget = Budget.of(Context(3.0))
    assert 2.9 < budget.timeout(10.0) <= 3.0
    assert budget.timeout(1.0) == 1.0
    assert 1.9 < budget.timeout(10.0, reserve_s=1.0) <= 2.0
    assert budget.timeout(10.0, reserve_s=5.0) > 0  # never zero or negative: grpc ends it at once


async def test_analyze_gives_torchserve_and_the_labeler_only_what_is_left(sqlite_db, tmp_path):
    recorder = Recorder()
    settings = make_settings(tmp_path, use_chatgpt=True, openai_api_key="sk-x", torchserve_timeout_s=10.0)
    analyzer = Analyzer(
        settings,
        sqlite_db,
        ImageStore(tmp_path / "uploads"),
        recorder,
        recorder.call_labeler,
        RetryPolicy(3, 0.1, 1.0),
        lambda: None,
    )
    await analyzer.analyze(photo(), "meal.jpg", Budget.of(Context(4.0)))
    assert 3.5 < recorder.timeouts["classify"] <= 4.0
    assert 3.5 < recorder.timeouts["predict_nutrition"] <= 4.0
    assert 0 < recorder.timeouts["labeler"] < 4.0  # with time left to store the sample and answer
    await analyzer.analyze(photo(color=(1, 2, 3)), "meal.jpg", Budget.of(Context(None)))
    assert recorder.timeouts["classify"] == 10.0 and recorder.timeouts["labeler"] is None


async def test_forwarded_trainer_calls_get_the_callers_deadline():
    recorder = Recorder()
    servicer = GatewayServicer(None, None, None, recorder, (), "")
    await servicer.ListModelVersions(trainer_pb2.ListModelVersionsRequest(), Context(2.0))
    assert 1.5 < recorder.timeouts["trainer"] <= 2.0
    await servicer.ListModelVersions(trainer_pb2.ListModelVersionsRequest(), Context(None))
    assert recorder.timeouts["trainer"] == 30.0  # no deadline from the caller: our own limit


async def test_a_slow_label_does_not_outlive_the_callers_deadline(system, openai_stub):
    # ChatGPT takes 8 s; the caller gives 3 s
    openai_stub.reset(default=dataclasses.replace(answer(), delay_s=8.0))
    app = await system()
    response = await app.gateway.AnalyzeMeal(
        gateway_pb2.AnalyzeMealRequest(image=photo()), metadata=auth(), timeout=3.0
    )  # an answer at all (not DEADLINE_EXCEEDED) is the gateway keeping within the 3 s
    assert openai_stub.calls == 1  # ChatGPT was asked, and the gateway stopped waiting for it
    assert response.label_status == common_pb2.LABEL_STATUS_PENDING  # our numbers now, the label later
    assert response.source == common_pb2.NUTRITION_SOURCE_REFERENCE


async def test_a_caller_that_gives_up_while_the_model_runs_leaves_no_photo(sqlite_db, tmp_path):
    """The photo is written while the model runs; a request cancelled meanwhile removes it."""
    started = asyncio.Event()

    class Stuck(Recorder):
        async def classify(self, image, timeout=None, more=()):
            started.set()
            await asyncio.Event().wait()  # a model that never answers

    uploads = tmp_path / "uploads"
    analyzer = Analyzer(
        make_settings(tmp_path), sqlite_db, ImageStore(uploads), Stuck(), None, RetryPolicy(3, 0.1, 1.0), None
    )
    request = asyncio.create_task(analyzer.analyze(photo(), "meal.jpg"))
    await started.wait()
    await asyncio.sleep(0.2)  # the photo's write is done or under way
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    for _ in range(50):  # the write ends in its own thread; the photo is removed when it does
        if not [p for p in uploads.rglob("*") if p.is_file()]:
            break
        await asyncio.sleep(0.1)
    assert [p for p in uploads.rglob("*") if p.is_file()] == []
