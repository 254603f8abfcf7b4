"""The quality test set and ledger: kept out of training, scored per version, read by the CLI."""

import asyncio
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from sqlmodel import select

from foodcal.store import ModelVersionRow, Sample
from foodcal.v1 import common_pb2, gateway_pb2
from tests.conftest import API_TOKEN, auth
from tests.trainer_helpers import add_samples, learnable, start_run, watch
from trainer.backfill import current_classifier
from trainer.data import (
    TEST_PERCENT,
    VALIDATION_PERCENT,
    Dataset,
    in_test_set,
    in_truth_set,
    is_early_stopping,
    is_validation,
)
from trainer.versions import load_mar_checkpoint

ROOT = Path(__file__).resolve().parent.parent
DISHES = ("pizza", "ramen", "sushi")


def in_test_bucket(image_sha256: str) -> bool:
    """Written out again here, so the test does not trust trainer/data.py's own arithmetic."""
    return int(hashlib.sha256(image_sha256.encode()).hexdigest()[:8], 16) % 100 >= 100 - TEST_PERCENT


def in_truth_bucket(image_sha256: str) -> bool:
    """The validation and test buckets, written out again: no version is ever trained on them."""
    bucket = int(hashlib.sha256(image_sha256.encode()).hexdigest()[:8], 16) % 100
    return bucket < VALIDATION_PERCENT or bucket >= 100 - TEST_PERCENT


def test_split_learns_from_corrections_on_the_training_side_and_holds_out_the_rest_as_the_truth():
    ids = [f"{i:032x}" for i in range(2000)]
    corrections = np.full((2000, 4), np.nan, "f4")
    corrections[::7] = 1.0  # corrections, whatever their bucket
    corrected = {i for i, c in zip(ids, corrections, strict=True) if not np.isnan(c).any()}
    assert 0.08 < sum(map(in_test_bucket, ids)) / len(ids) < 0.12
    assert not any(in_test_bucket(i) and (is_validation(i) or is_early_stopping(i)) for i in ids)
    data = Dataset(
        ids, np.zeros((2000, 4), "f4"), np.zeros((2000, 101), "f4"), np.zeros((2000, 4), "f4"), ids,
        labels=np.zeros((2000, 4), "f4"), corrections=corrections,
    )  # fmt: skip
    train, early_stopping, validation, truth = data.split()
    trained = set(train.ids + early_stopping.ids)
    # The truth set: exactly the corrected photos of the validation and test buckets, with their truth.
    assert set(truth.ids) == {i for i in corrected if in_truth_bucket(i)}
    assert set(truth.ids) == {i for i in corrected if in_truth_set(i)} and (truth.targets == 1.0).all()
    assert 0.2 < len(truth) / len(corrected) < 0.4  # TRUTH_PERCENT of the corrections
    # The other corrections are learnt from; no held-out photo is ever trained on.
    assert {i for i in corrected if not in_truth_bucket(i)} <= trained
    assert not trained & {i for i in ids if in_truth_bucket(i)}
    assert not set(validation.ids) & {i for i in ids if in_test_bucket(i)}
    assert trained | set(validation.ids) | {i for i in ids if in_test_bucket(i)} == set(ids)
    assert {i for i in ids if in_test_bucket(i)} == {i for i in ids if in_test_set(i)}
    assert data.split().train.ids == train.ids  # stable


def _errors(predictions, truths):
    difference = np.asarray(predictions, "f8") - np.asarray(truths, "f8")
    return np.abs(difference).mean(axis=0), difference.mean(axis=0)


def _values(n):
    return [n.calories_kcal, n.proteins_g, n.fats_g, n.carbs_g]


async def test_every_version_is_scored_on_the_test_set_live_and_on_corrections_apart(
    system, torchserve, tmp_path
):
    app = await system(use_chatgpt=False)
    classifier = await current_classifier(torchserve.client)
    add_samples(app.db, 240, classifier, learnable)
    with app.db.session() as session:
        rows = session.exec(select(Sample).order_by(Sample.image_sha256)).all()
        for index, row in enumerate(rows):
            row.top1_dish, row.pred_model_version = DISHES[index % 3], 0  # v0 answered them all live
            session.add(row)
        ids = [(row.id, row.image_sha256) for row in rows]
    # Six corrections learnt from (training buckets), six held out as the truth (validation, test).
    learnt = [sample_id for sample_id, sha in ids if not in_truth_bucket(sha)][:6]
    held_out = [sample_id for sample_id, sha in ids if in_truth_bucket(sha)][:6]
    corrected = learnt + held_out
    with app.db.session() as session:
        labels = {i: session.get(Sample, i).values("label") for i in corrected}
    for number, sample_id in enumerate(corrected):
        kcal, proteins, fats, carbs = (v * (1.1 + 0.02 * number) for v in labels[sample_id])
        truth = common_pb2.Nutrition(calories_kcal=kcal, proteins_g=proteins, fats_g=fats, carbs_g=carbs)
        await app.gateway.CorrectSample(
            gateway_pb2.CorrectSampleRequest(sample_id=sample_id, nutrition=truth), metadata=auth()
        )

    started = await start_run(app)
    outcome = (await watch(app, started.run_id))[-1].outcome
    assert outcome.status == common_pb2.TRAINING_RUN_STATUS_DEPLOYED, outcome.message
    test_ids = {i for i, sha in ids if in_test_bucket(sha)}
    # Trained on or compared on: every photo but the ChatGPT test set's, the learnt corrections too.
    assert outcome.train_samples + outcome.val_samples == len(ids) - len(test_ids)

    report = await app.gateway.GetQualityReport(
        gateway_pb2.GatewayServiceGetQualityReportRequest(), metadata=auth()
    )
    assert [(v.version, v.served) for v in report.versions] == [(0, False), (1, True)]
    assert report.served_version == 1 and report.test_percent == TEST_PERCENT

    # The numbers equal a direct computation from the samples and the archive.
    with app.db.session() as session:
        samples = [session.get(Sample, i) for i in sorted(test_ids | set(held_out))]
        v1 = session.get(ModelVersionRow, 1)
    from model_store.worker.nutrition_model import NutritionModel

    model = NutritionModel.from_checkpoint(load_mar_checkpoint(Path(v1.mar_path))).eval()
    import torch

    with torch.inference_mode():
        predictions = model(
            torch.from_numpy(np.stack([np.frombuffer(s.embedding, "<f4") for s in samples])),
            torch.from_numpy(np.stack([np.frombuffer(s.class_probabilities, "<f4") for s in samples])),
        ).numpy()
    labelled = [k for k, s in enumerate(samples) if s.id in test_ids]
    mae, bias = _errors(predictions[labelled], [samples[k].values("label") for k in labelled])
    ledger = report.versions[1]
    assert ledger.test_chatgpt.overall.samples == len(labelled) == len(test_ids)
    assert _values(ledger.test_chatgpt.overall.mae) == pytest.approx(mae, rel=1e-5)
    assert _values(ledger.test_chatgpt.overall.bias) == pytest.approx(bias, rel=1e-4, abs=1e-4)
    # Scored on the day it was made too (the set has not grown since).
    assert ledger.test_chatgpt_at_creation.samples == len(labelled)
    assert ledger.test_chatgpt_at_creation.score == pytest.approx(ledger.test_chatgpt.overall.score)

    # Against the truth: the held-out corrections only, never the six it learnt from.
    fixed = [k for k, s in enumerate(samples) if s.id in held_out]
    truths = np.array([samples[k].values("correction") for k in fixed])
    errors = np.abs(predictions[fixed] - truths)
    assert ledger.test_corrections.overall.samples == 6 and report.truth_note == ""
    assert _values(ledger.test_corrections.overall.mae) == pytest.approx(errors.mean(axis=0), rel=1e-5)
    assert _values(ledger.test_corrections.overall.relative_error) == pytest.approx(
        errors.mean(axis=0) / truths.mean(axis=0), rel=1e-5
    )
    half = 1.96 * errors.std(axis=0, ddof=1) / np.sqrt(6)
    assert _values(ledger.test_corrections.overall.mae_high) == pytest.approx(
        errors.mean(axis=0) + half, rel=1e-3
    )
    # ChatGPT itself against the truth, on the same photos: every label was 10-32% under it.
    teacher = np.array([samples[k].values("label") for k in fixed])
    chatgpt = report.chatgpt_vs_corrections.overall
    assert chatgpt.samples == 6 and report.truth_percent == 30
    assert _values(chatgpt.mae) == pytest.approx(np.abs(teacher - truths).mean(axis=0), rel=1e-5)
    assert _values(chatgpt.bias) == pytest.approx((teacher - truths).mean(axis=0), rel=1e-5)
    assert chatgpt.bias.calories_kcal < 0

    # Per dish, worst first, each with its count.
    dishes = ledger.test_chatgpt.worst_dishes
    assert sorted(d.dish for d in dishes) == sorted(DISHES)
    assert [d.errors.score for d in dishes] == sorted((d.errors.score for d in dishes), reverse=True)
    pizza = [k for k in labelled if samples[k].top1_dish == "pizza"]
    mae, _ = _errors(predictions[pizza], [samples[k].values("label") for k in pizza])
    (reported,) = [d.errors for d in dishes if d.dish == "pizza"]
    assert reported.samples == len(pizza) and _values(reported.mae) == pytest.approx(mae, rel=1e-5)

    # Live: what v0 answered against ChatGPT's label, on every labelled sample; v1 answered none.
    with app.db.session() as session:
        answered = session.exec(select(Sample).where(Sample.pred_model_version == 0)).all()
    mae, bias = _errors([s.values("pred") for s in answered], [s.values("label") for s in answered])
    assert report.versions[0].live.overall.samples == len(answered) == len(ids)
    assert _values(report.versions[0].live.overall.mae) == pytest.approx(mae, rel=1e-6)
    assert _values(report.versions[0].live.overall.bias) == pytest.approx(bias, rel=1e-6, abs=1e-6)
    assert report.versions[1].live.overall.samples == 0
    assert not report.versions[0].HasField("test_chatgpt_at_creation")

    # The CLI prints the ledger and writes the chart.
    env = {
        **os.environ,
        "FOODCAL_TOKEN": dict(auth())["authorization"].removeprefix("Bearer "),
        "FOODCAL_ADDRESS": f"127.0.0.1:{app.servers['gateway'].port}",
        "PYTHONPATH": str(ROOT),
    }
    chart = tmp_path / "quality.png"
    command = [sys.executable, "-m", "foodcal.cli.main", "quality", "--chart", str(chart)]
    result = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert "v1  (served)" in result.stdout and "vs truth             n=6" in result.stdout
    assert "ChatGPT vs truth  n=6" in result.stdout
    assert "worst dishes, test vs ChatGPT: " in result.stdout
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000

    # Admin only; bad options are the caller's to fix.
    for metadata, request, code in (
        (
            auth(API_TOKEN),
            gateway_pb2.GatewayServiceGetQualityReportRequest(),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        (
            auth(),
            gateway_pb2.GatewayServiceGetQualityReportRequest(worst_dishes=500),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await app.gateway.GetQualityReport(request, metadata=metadata)
        assert raised.value.code() == code, raised.value.details()
