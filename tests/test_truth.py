"""Corrections are the truth: the student learns what a biased ChatGPT gets wrong, the ledger scores
every version and ChatGPT itself against held-out corrections, and a correction cannot be abused."""

import hashlib
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from sqlmodel import select

from foodcal.store import LabelStatus, ModelVersionRow, Sample, TrainingRunRow
from foodcal.v1 import common_pb2, gateway_pb2
from model_store.worker.nutrition_model import NutritionModel
from tests.conftest import API_TOKEN, auth, photo
from tests.openai_stub import GOOD_ANSWER
from tests.trainer_helpers import start_run, watch
from trainer.data import Dataset, load_dataset
from trainer.gate import EVIDENCE_CHATGPT, EVIDENCE_TRUTH, MIN_TRUTH_PHOTOS, decide
from trainer.teacher_bias import TeacherBias
from trainer.trust import capped_rows, correction_weights, trusted
from trainer.versions import load_mar_checkpoint

UNDER_COUNT = 0.7  # the teacher's systematic error: it sees 70% of every plate
NUTRIENTS = ("calories_kcal", "proteins_g", "fats_g", "carbs_g")
UNLIMITED = {  # one client sends them all
    "client_rate_per_minute": 100_000,
    "client_rate_burst": 1_000,
    "client_call_rate_per_minute": 100_000,
    "client_call_burst": 1_000,
}
TEACHER = np.array([GOOD_ANSWER[n] for n in NUTRIENTS])


def held_out(image_sha256: str) -> bool:
    """The validation and test buckets, written out again rather than trusting trainer/data.py."""
    bucket = int(hashlib.sha256(image_sha256.encode()).hexdigest()[:8], 16) % 100
    return bucket < 20 or bucket >= 90


def _values(n: common_pb2.Nutrition) -> list[float]:
    return [n.calories_kcal, n.proteins_g, n.fats_g, n.carbs_g]


def _nutrition(values) -> common_pb2.Nutrition:
    return common_pb2.Nutrition(**dict(zip(NUTRIENTS, map(float, values), strict=True)))


async def test_student_learns_the_biased_teachers_error_and_the_ledger_scores_both_against_the_truth(system):
    app = await system(min_training_samples=50, **UNLIMITED)
    rng = np.random.default_rng(5)
    ids = []
    for i in range(160):  # every photo labelled by the stub: ChatGPT under-counts each by 30%
        response = await app.gateway.AnalyzeMeal(
            gateway_pb2.AnalyzeMealRequest(
                image=photo(color=((i * 13) % 256, (i * 57) % 256, (i * 101) % 256))
            ),
            metadata=auth(API_TOKEN),
        )
        assert response.label_status == common_pb2.LABEL_STATUS_LABELED
        ids.append(response.sample_id)
    truths = {}
    for sample_id in ids[:130]:  # a person weighed 130 of the plates
        truths[sample_id] = TEACHER / UNDER_COUNT * np.exp(rng.normal(0, 0.05, 4))
        await app.gateway.CorrectSample(
            gateway_pb2.CorrectSampleRequest(sample_id=sample_id, nutrition=_nutrition(truths[sample_id])),
            metadata=auth(API_TOKEN),
        )

    started = await start_run(app)
    outcome = (await watch(app, started.run_id))[-1].outcome
    assert outcome.status == common_pb2.TRAINING_RUN_STATUS_DEPLOYED, outcome.message
    with app.db.session() as session:
        rows = {row.id: row for row in session.exec(select(Sample)).all()}
        run = session.get(TrainingRunRow, started.run_id)
        v1 = session.get(ModelVersionRow, 1)
    assert len({row.image_sha256 for row in rows.values()}) == 160
    truth_ids = sorted(i for i in truths if held_out(rows[i].image_sha256))
    assert len(truth_ids) >= MIN_TRUTH_PHOTOS  # enough to decide on the truth
    # The run learnt the teacher's under-count from the other corrections, and the truth decided.
    factor = run.metrics["teacher_bias"]["global_factor"]["calories_kcal"]
    assert factor == pytest.approx(1 / UNDER_COUNT, rel=0.05)
    assert run.metrics["evidence"] == EVIDENCE_TRUTH and f"on truth ({len(truth_ids)}" in outcome.message

    report = await app.gateway.GetQualityReport(
        gateway_pb2.GatewayServiceGetQualityReportRequest(), metadata=auth()
    )
    truth = np.array([rows[i].values("correction") for i in truth_ids])
    labels = np.array([rows[i].values("label") for i in truth_ids])
    model = NutritionModel.from_checkpoint(load_mar_checkpoint(Path(v1.mar_path))).eval()
    with torch.inference_mode():
        predicted = model(
            torch.from_numpy(np.stack([np.frombuffer(rows[i].embedding, "<f4") for i in truth_ids])),
            torch.from_numpy(
                np.stack([np.frombuffer(rows[i].class_probabilities, "<f4") for i in truth_ids])
            ),
        ).numpy()
    chatgpt, served = report.chatgpt_vs_corrections.overall, report.versions[1].test_corrections.overall
    assert chatgpt.samples == served.samples == len(truth_ids) and report.truth_note == ""
    assert _values(chatgpt.mae) == pytest.approx(np.abs(labels - truth).mean(axis=0), rel=1e-5)
    assert _values(served.mae) == pytest.approx(np.abs(predicted - truth).mean(axis=0), rel=1e-4)
    low, high = _values(served.mae_low), _values(served.mae_high)
    assert all(lo <= m <= hi for lo, m, hi in zip(low, _values(served.mae), high, strict=True))
    # The student is far closer to the truth than the teacher it learnt from.
    assert served.mae.calories_kcal < 0.25 * chatgpt.mae.calories_kcal
    assert chatgpt.bias.calories_kcal == pytest.approx((labels - truth)[:, 0].mean(), rel=1e-5)
    assert chatgpt.bias.calories_kcal < 0


async def test_without_corrections_the_report_says_so(system):
    app = await system(use_chatgpt=False)
    report = await app.gateway.GetQualityReport(
        gateway_pb2.GatewayServiceGetQualityReportRequest(), metadata=auth()
    )
    assert report.chatgpt_vs_corrections.overall.samples == 0
    assert "no corrected photo is held out yet" in report.truth_note and report.truth_percent == 30


async def test_a_far_correction_is_flagged_listed_and_learnt_only_once_an_admin_confirms_it(system):
    app = await system(**UNLIMITED)
    photos = [
        await app.gateway.AnalyzeMeal(
            gateway_pb2.AnalyzeMealRequest(image=photo(color=(30 * i, 200, 90))), metadata=auth(API_TOKEN)
        )
        for i in range(3)
    ]
    near, far, other = (p.sample_id for p in photos)
    label = photos[0].chatgpt_label.nutrition
    corrected = {}
    for sample_id, scale in ((near, 1.3), (far, 4.0), (other, 1.0)):
        response = await app.gateway.CorrectSample(
            gateway_pb2.CorrectSampleRequest(
                sample_id=sample_id, nutrition=_nutrition(np.array(_values(label)) * scale)
            ),
            metadata=auth(API_TOKEN),
        )
        corrected[sample_id] = response.sample
    assert corrected[near].correction_flag == "" and corrected[other].correction_flag == ""
    assert "4× ChatGPT's label and " in corrected[far].correction_flag
    assert corrected[far].correction_review == common_pb2.CORRECTION_REVIEW_UNREVIEWED

    async def listed(which: int) -> list[str]:
        request = gateway_pb2.ListSamplesRequest(corrections=which)
        return [s.sample_id for s in (await app.gateway.ListSamples(request, metadata=auth())).samples]

    assert await listed(gateway_pb2.CORRECTION_FILTER_FLAGGED) == [far]
    assert sorted(await listed(gateway_pb2.CORRECTION_FILTER_CORRECTED)) == sorted(corrected)

    def learnt() -> set[str]:
        classifier = photos[0].model_versions.classifier
        data = load_dataset(app.db, classifier)
        return {i for i, ok in zip(data.ids, data.has_correction(), strict=True) if ok}

    assert learnt() == {near, other}  # kept, but not learnt from
    # Reviewing is the admin's; the client cannot, and nonsense is the caller's to fix.
    for metadata, request, code in (
        (
            auth(API_TOKEN),
            gateway_pb2.ReviewCorrectionRequest(sample_id=far, review=2),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        (auth(), gateway_pb2.ReviewCorrectionRequest(sample_id=far), grpc.StatusCode.INVALID_ARGUMENT),
        (
            auth(),
            gateway_pb2.ReviewCorrectionRequest(sample_id="0" * 32, review=2),
            grpc.StatusCode.NOT_FOUND,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await app.gateway.ReviewCorrection(request, metadata=metadata)
        assert raised.value.code() == code, raised.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await app.gateway.ListSamples(gateway_pb2.ListSamplesRequest(corrections=99), metadata=auth())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    confirmed = await app.gateway.ReviewCorrection(
        gateway_pb2.ReviewCorrectionRequest(sample_id=far, review=common_pb2.CORRECTION_REVIEW_CONFIRMED),
        metadata=auth(),
    )
    assert confirmed.sample.correction_review == common_pb2.CORRECTION_REVIEW_CONFIRMED
    assert learnt() == {near, far, other} and await listed(gateway_pb2.CORRECTION_FILTER_FLAGGED) == []
    await app.gateway.ReviewCorrection(
        gateway_pb2.ReviewCorrectionRequest(sample_id=near, review=common_pb2.CORRECTION_REVIEW_REJECTED),
        metadata=auth(),
    )
    assert learnt() == {far, other} and await listed(gateway_pb2.CORRECTION_FILTER_REJECTED) == [near]
    with app.db.session() as session:  # rejected, not lost
        assert session.get(Sample, near).values("correction") is not None
        assert session.get(Sample, near).label_status == LabelStatus.LABELED


def test_far_corrections_of_one_dish_that_agree_with_each_other_are_trusted_and_lone_ones_are_not():
    log3 = np.log(3.0)
    ratios = [log3, log3 * 1.02, log3 * 0.98, log3, -log3]
    flags = ["far", "far", "far", "far", "far"]
    dishes = [7, 7, 7, 8, 7]
    ok = trusted(flags, [""] * 5, dishes, ratios)
    # Three of dish 7 agree (the teacher is 3× off there); dish 8's lone one and the contrary one do not.
    assert ok.tolist() == [True, True, True, False, False]
    assert trusted(flags, ["confirmed", "", "", "", "rejected"], dishes, ratios).tolist()[0] is True
    assert trusted([""] * 5, ["rejected", "", "", "", ""], dishes, ratios).tolist() == [
        False,
        True,
        True,
        True,
        True,
    ]


def test_one_client_weighs_at_most_its_share_and_a_lone_client_learns_fully():
    # A lone client: nothing capped; its corrections count in full.
    assert capped_rows(["a"] * 10, [str(i) for i in range(10)], 0.3).all()
    assert correction_weights(["a"] * 10, clients=1, share=0.3).tolist() == [1.0] * 10
    # Samples from before owners were recorded are nobody's: never capped, and no second client.
    assert capped_rows([None] * 50 + ["a"] * 5, [str(i) for i in range(55)], 0.3).all()
    # Four clients, one sending 70 of 100 photos: it keeps 30.
    owners = ["big"] * 70 + ["b"] * 10 + ["c"] * 10 + ["d"] * 10
    keep = capped_rows(owners, [f"{i:04d}" for i in range(100)], 0.3)
    assert sum(k for k, o in zip(keep, owners, strict=True) if o == "big") == 30 and keep[70:].all()
    # Its corrections, even consistent ones, move the teacher's bias by at most its share.
    weights = correction_weights(["big"] * 40, clients=4, share=0.3)
    teacher, truth = np.full((40, 4), 100.0), np.full((40, 4), 300.0)  # "everything is 3× more"
    dishes = np.zeros(40, dtype=np.int64)
    alone = TeacherBias.fit(teacher, truth, dishes)
    shared = TeacherBias.fit(teacher, truth, dishes, weights)
    assert np.exp(alone.log_ratio[0, 0]) == pytest.approx(2.9, rel=0.05)
    assert shared.log_ratio[0, 0] == pytest.approx(0.3 * alone.log_ratio[0, 0], rel=0.05)


def test_what_a_run_records_of_the_teacher_bias_is_strict_json_even_without_corrections():
    import json

    from model_store.reference import food101_labels

    none = TeacherBias.none().as_dict(food101_labels())
    assert json.loads(json.dumps(none, allow_nan=False))["corrections"] == 0  # PostgreSQL refuses Infinity
    truth = np.full((3, 4), 200.0)
    some = TeacherBias.fit(truth / 1.3, truth, np.array([4, 4, 9])).as_dict(food101_labels())
    assert json.dumps(some, allow_nan=False) and some["global_factor"]["calories_kcal"] > 1


def test_teacher_bias_is_shrunk_towards_no_difference_when_corrections_are_few():
    rng = np.random.default_rng(0)
    truth = rng.uniform(200, 800, size=(200, 4))
    dishes = np.repeat(np.arange(40), 5)
    teacher = truth / 1.3 * np.exp(rng.normal(0, 0.1, size=(200, 4)))  # under-counts every dish by 30%
    many = TeacherBias.fit(teacher, truth, dishes)
    one = TeacherBias.fit(teacher[:1], truth[:1], dishes[:1])
    assert np.exp(many.global_log_ratio[0]) == pytest.approx(1.3, rel=0.03)
    assert 0 <= one.global_log_ratio[0] < 0.5 * many.global_log_ratio[0]  # one correction: little or none
    assert np.allclose(TeacherBias.none().adjust(teacher, dishes), teacher)
    adjusted = many.adjust(teacher, dishes)
    assert np.abs(adjusted - truth).mean() < 0.5 * np.abs(teacher - truth).mean()


def _dataset(values: np.ndarray, truths: np.ndarray) -> Dataset:
    n = len(values)
    ids = [f"{i:032x}" for i in range(n)]
    features = np.tile(values[:, :1].astype("f4"), (1, 4))
    return Dataset(ids, features, np.full((n, 101), 1 / 101, "f4"), truths.astype("f4"), ids)


class Constant(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, embeddings, probabilities):
        return torch.full((len(embeddings), 4), self.value)


def test_gate_decides_on_the_truth_when_it_is_large_enough_and_on_chatgpt_otherwise():
    values = np.full((40, 4), 100.0)
    labels = _dataset(values, values * 1.0)  # ChatGPT says 100
    truth = _dataset(values, values * 1.4)  # people weighed 140
    closer_to_truth, closer_to_chatgpt = Constant(140.0), Constant(100.0)
    on_truth = decide(closer_to_truth, closer_to_chatgpt, labels, truth)
    assert on_truth.evidence == EVIDENCE_TRUTH and on_truth.better
    few = truth.subset(np.arange(40) < MIN_TRUTH_PHOTOS - 1)
    on_labels = decide(closer_to_truth, closer_to_chatgpt, labels, few)
    assert on_labels.evidence == EVIDENCE_CHATGPT and not on_labels.better
    assert f"{MIN_TRUTH_PHOTOS - 1} held-out corrected photos" in on_labels.summary()


@pytest.mark.postgres
async def test_a_run_on_postgresql_deploys_and_is_recorded_finished(system, torchserve, postgres_url):
    """PostgreSQL's json type refuses what SQLite stores (Infinity): a run's metrics must be strict
    JSON, or the run stays "running" and its watchers wait forever."""
    from tests.trainer_helpers import add_samples, learnable
    from trainer.backfill import current_classifier

    app = await system(db_url=postgres_url, use_chatgpt=False)
    add_samples(app.db, 80, await current_classifier(torchserve.client), learnable)
    started = await start_run(app)
    outcome = (await watch(app, started.run_id))[-1].outcome
    assert outcome.status == common_pb2.TRAINING_RUN_STATUS_DEPLOYED, outcome.message
    with app.db.session() as session:
        run = session.get(TrainingRunRow, started.run_id)
    assert run.finished_at is not None and run.metrics["teacher_bias"]["corrections"] == 0
