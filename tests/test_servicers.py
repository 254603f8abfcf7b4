"""Servicer logic without a network: the translation between protobuf and our code.

grpcio-testing drives only synchronous servicers; ours are grpc.aio coroutines, so these tests
await the servicer methods directly with a context that records `abort`.
"""

import math
from types import SimpleNamespace

import grpc
import pytest

from foodcal.domain.labels import Label, LabelSource
from foodcal.store import LabelStatus, RunStatus, Sample, TrainingRunRow
from foodcal.v1 import common_pb2, gateway_pb2, labeler_pb2, trainer_pb2
from gateway.auth import Roles
from gateway.samples import sample_proto
from gateway.service import GatewayServicer
from labeler.service import LabelerServicer
from model_store.torchserve_client import ModelServerError
from trainer.messages import run_proto
from trainer.service import TrainerServicer


class Aborted(Exception):
    def __init__(self, code, details, trailing_metadata=()):
        super().__init__(details)
        self.code, self.details, self.trailing_metadata = code, details, trailing_metadata


class Context:
    async def abort(self, code, details, trailing_metadata=()):
        raise Aborted(code, details, trailing_metadata)

    def set_trailing_metadata(self, metadata):
        self.trailing = metadata


async def aborted(call) -> Aborted:
    with pytest.raises(Aborted) as raised:
        await call
    return raised.value


@pytest.mark.parametrize(
    "request_",
    [
        trainer_pb2.StartTrainingRunRequest(epochs=0),
        trainer_pb2.StartTrainingRunRequest(batch_size=0),
        trainer_pb2.StartTrainingRunRequest(learning_rate=math.nan),
    ],
)
async def test_training_parameters_are_checked_before_any_work(request_):
    servicer = TrainerServicer(runs=None, versions=None, torchserve=None, images=None)
    error = await aborted(servicer.StartTrainingRun(request_, Context()))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_page_size_and_correction_are_checked_before_the_database():
    servicer = GatewayServicer(None, None, None, None, (), "")
    error = await aborted(servicer.ListSamples(gateway_pb2.ListSamplesRequest(page_size=10**9), Context()))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "page_size" in error.details
    bad = common_pb2.Nutrition(calories_kcal=-5, proteins_g=1, fats_g=1, carbs_g=1)
    error = await aborted(
        servicer.CorrectSample(gateway_pb2.CorrectSampleRequest(sample_id="x", nutrition=bad), Context())
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "calories_kcal" in error.details


async def test_labeler_refuses_an_empty_image_before_calling_anyone():
    error = await aborted(LabelerServicer(labeler=None).LabelMeal(labeler_pb2.LabelMealRequest(), Context()))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_stored_run_becomes_its_message():
    run = TrainingRunRow(
        status=RunStatus.NOT_DEPLOYED,
        parameters={
            "epochs": 2,
            "batch_size": 8,
            "learning_rate": 0.001,
            "weight_decay": 0.0,
            "patience": 0,
            "hidden_size": 16,
        },
        epochs=[{"epoch": 1, "total_epochs": 2, "train_loss": 1.5, "val_loss": 1.7, "best_val_loss": 1.7}],
        metrics={
            "candidate": {
                "mae": {"calories_kcal": 10, "proteins_g": 1, "fats_g": 2, "carbs_g": 3},
                "score": 0.3,
                "samples": 12,
            },
        },
        message="not deployed",
    )
    message = run_proto(run)
    assert message.status == common_pb2.TRAINING_RUN_STATUS_NOT_DEPLOYED
    assert message.epochs[0].val_loss == 1.7 and message.candidate.mae.fats_g == 2
    assert not message.HasField("served") and message.parameters.hidden_size == 16
    assert not message.HasField("result_version") and not message.HasField("served_version_before")
    run.status, run.served_version_before, run.result_version = RunStatus.DEPLOYED, 0, 1
    message = run_proto(run)  # version 0 (the table) is a version like any other, not "none"
    assert message.HasField("served_version_before") and message.served_version_before == 0
    assert message.result_version == 1


class TorchServe:
    def __init__(self, served: str | None) -> None:
        self.served = served

    async def served_version(self) -> str:
        if self.served is None:
            raise ModelServerError("connection refused", unavailable=True)
        return self.served

    async def identify_classifier(self) -> tuple[str, bool]:
        return "demo@1", True


class AdminContext(Context):
    def invocation_metadata(self):
        return (("authorization", "Bearer admin-token"),)


@pytest.mark.parametrize(("served", "present"), [("0", True), ("3", True), (None, False)])
async def test_stats_name_the_served_version_only_while_the_model_server_knows_it(db, served, present):
    analyzer = SimpleNamespace(settings=SimpleNamespace(chatgpt_daily_budget_usd=0.0))
    roles = Roles(client_tokens=[], admin_tokens=["admin-token"])
    servicer = GatewayServicer(db, analyzer, TorchServe(served), None, (), "gpt-4o-mini", roles=roles)
    response = await servicer.GetStats(gateway_pb2.GetStatsRequest(), AdminContext())
    assert response.served.HasField("nutrition") is present and response.served.labeler_model == "gpt-4o-mini"
    assert response.served.nutrition == int(served or 0)


def test_a_stored_sample_becomes_its_message_with_the_difference():
    sample = Sample(
        image_sha256="c" * 64,
        image_path="x",
        dishes=[["ramen", 0.9]],
        label_status=LabelStatus.LABELED,
        pred_model_version=2,
        shown_source="NUTRITION_SOURCE_CHATGPT",
    )
    sample.set_values("pred", (600, 25, 20, 70))
    sample.set_label(Label(LabelSource.CHATGPT, "ramen", 500, (550, 30, 18, 75), 0.7, "p", "m"))
    message = sample_proto(sample)
    assert message.difference == common_pb2.Nutrition(calories_kcal=50, proteins_g=-5, fats_g=2, carbs_g=-5)
    assert message.label_status == common_pb2.LABEL_STATUS_LABELED and message.own_prediction_version == 2
    assert message.chatgpt_label.nutrition.calories_kcal == 550 and not message.corrected
    sample.pred_model_version = None  # stored without a prediction: unset, not version 0
    assert not sample_proto(sample).HasField("own_prediction_version")
