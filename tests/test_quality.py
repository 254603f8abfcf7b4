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

from foodcal.store import LabelStatus, ModelVersionRow, Sample
from foodcal.v1 import common_pb2, gateway_pb2
from tests.conftest import API_TOKEN, auth
from tests.trainer_helpers import add_samples, learnable, start_run, watch
from trainer.backfill import current_classifier
from trainer.data import TEST_PERCENT, Dataset, in_test_set, is_early_stopping, is_validation
from trainer.versions import load_mar_checkpoint

ROOT = Path(__file__).resolve().parent.parent
DISHES = ("pizza", "ramen", "sushi")


def in_test_bucket(image_sha256: str) -> bool:
    """Written out again here, so the test does not trust trainer/data.py's own arithmetic."""
    return int(hashlib.sha256(image_sha256.encode()).hexdigest()[:8], 16) % 100 >= 100 - TEST_PERCENT


def test_split_keeps_the_test_set_and_every_correction_out_of_every_training_side():
    ids = [f"{i:032x}" for i in range(2000)]
    corrected = np.zeros(2000, dtype=bool)
    corrected[::37] = True  # corrections, whatever their bucket
    assert 0.08 < sum(map(in_test_bucket, ids)) / len(ids) < 0.12
    assert not any(in_test_bucket(i) and (is_validation(i) or is_early_stopping(i)) for i in ids)
    data = Dataset(
        ids, np.zeros((2000, 4), "f4"), np.zeros((2000, 101), "f4"), np.zeros((2000, 4), "f4"), ids, corrected
    )
    train, early_stopping, validation = data.split()
    used = set(train.ids + early_stopping.ids + validation.ids)
    test = {i for i, c in zip(ids, corrected, strict=True) if c or in_test_bucket(i)}
    assert test == {i for i, c in zip(ids, corrected, strict=True) if in_test_set(i, bool(c))}
    assert not used & test and used | test == set(ids)
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
    corrected = [sample_id for sample_id, sha in ids if not in_test_bucket(sha)][:6]  # trainable before
    for number, sample_id in enumerate(corrected):
        truth = common_pb2.Nutrition(calories_kcal=500 + 10 * number, proteins_g=30, fats_g=20, carbs_g=60)
        await app.gateway.CorrectSample(
            gateway_pb2.CorrectSampleRequest(sample_id=sample_id, nutrition=truth), metadata=auth()
        )

    started = await start_run(app)
    outcome = (await watch(app, started.run_id))[-1].outcome
    assert outcome.status == common_pb2.TRAINING_RUN_STATUS_DEPLOYED, outcome.message
    test_ids = {i for i, sha in ids if in_test_bucket(sha)} | set(corrected)
    # Neither trained, stopped nor compared on: the run saw exactly the other samples.
    assert outcome.train_samples + outcome.val_samples == len(ids) - len(test_ids)

    report = await app.gateway.GetQualityReport(
        gateway_pb2.GatewayServiceGetQualityReportRequest(), metadata=auth()
    )
    assert [(v.version, v.served) for v in report.versions] == [(0, False), (1, True)]
    assert report.served_version == 1 and report.test_percent == TEST_PERCENT

    # The numbers equal a direct computation from the samples and the archive.
    with app.db.session() as session:
        samples = [session.get(Sample, i) for i in sorted(test_ids)]
        v1 = session.get(ModelVersionRow, 1)
    from model_store.nutrition_model import NutritionModel

    model = NutritionModel.from_checkpoint(load_mar_checkpoint(Path(v1.mar_path))).eval()
    import torch

    with torch.inference_mode():
        predictions = model(
            torch.from_numpy(np.stack([np.frombuffer(s.embedding, "<f4") for s in samples])),
            torch.from_numpy(np.stack([np.frombuffer(s.class_probabilities, "<f4") for s in samples])),
        ).numpy()
    labelled = [k for k, s in enumerate(samples) if s.label_status == LabelStatus.LABELED]
    mae, bias = _errors(predictions[labelled], [samples[k].values("label") for k in labelled])
    ledger = report.versions[1]
    assert ledger.test_chatgpt.overall.samples == len(labelled) == len(test_ids)
    assert _values(ledger.test_chatgpt.overall.mae) == pytest.approx(mae, rel=1e-5)
    assert _values(ledger.test_chatgpt.overall.bias) == pytest.approx(bias, rel=1e-4, abs=1e-4)
    # Scored on the day it was made too (the set has not grown since).
    assert ledger.test_chatgpt_at_creation.samples == len(labelled)
    assert ledger.test_chatgpt_at_creation.score == pytest.approx(ledger.test_chatgpt.overall.score)

    # Corrections apart, against the person's values.
    fixed = [k for k, s in enumerate(samples) if s.id in corrected]
    mae, _ = _errors(predictions[fixed], [samples[k].values("correction") for k in fixed])
    assert ledger.test_corrections.overall.samples == 6
    assert _values(ledger.test_corrections.overall.mae) == pytest.approx(mae, rel=1e-5)

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
    command = [sys.executable, "-m", "foodcal.client", "quality", "--chart", str(chart)]
    result = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert "v1  (served)" in result.stdout and "test vs corrections  n=6" in result.stdout
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
