"""Training runs against a real TorchServe and a real store, through the gateway."""

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from sqlmodel import select

from foodcal.store import LabelStatus, ModelVersionRow, RunStatus, Sample, TrainingRunRow
from foodcal.v1 import common_pb2, gateway_pb2, trainer_pb2, trainer_pb2_grpc
from model_store.worker.nutrition_model import NutritionModel
from tests.conftest import INTERNAL_TOKEN, auth, photo
from tests.trainer_helpers import add_samples, learnable, noise, refused, start_run, watch
from trainer.backfill import current_classifier


async def test_refuses_without_labelled_samples_and_with_too_few(system, torchserve):
    app = await system(use_chatgpt=False)
    error = await refused(app)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "no training data: collect ChatGPT labels first"
    classifier = await current_classifier(torchserve.client)
    add_samples(
        app.db, 60, classifier, None, status=LabelStatus.REFERENCE_ONLY, seed=1
    )  # never training data
    assert (await refused(app)).details() == "no training data: collect ChatGPT labels first"
    add_samples(app.db, 49, classifier, learnable, seed=2)
    error = await refused(app)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "too little data: 49 of 50"


async def test_learnable_labels_deploy_a_better_version_that_torchserve_then_serves(system, torchserve):
    app = await system(use_chatgpt=False)
    classifier = await current_classifier(torchserve.client)
    add_samples(app.db, 240, classifier, learnable)
    started = await start_run(app)
    assert (started.parameters.epochs, started.parameters.batch_size) == (20, 8)
    assert started.parameters.learning_rate == pytest.approx(0.001)
    events = await watch(app, started.run_id)
    epochs = [e.epoch for e in events if e.HasField("epoch")]
    assert [e.epoch for e in epochs] == list(range(0, 21))  # the closed-form start, then every epoch
    assert all(e.total_epochs == 20 for e in epochs)
    # best_val_loss: the loss of the checkpoint kept so far (an epoch replaces the closed form only
    # when clearly better), never rising, and always the loss of an epoch already seen.
    bests = [e.best_val_loss for e in epochs]
    assert bests == sorted(bests, reverse=True)
    assert all(any(abs(b - e.val_loss) < 1e-12 for e in epochs[: i + 1]) for i, b in enumerate(bests))
    outcome = events[-1].outcome
    assert outcome.status == common_pb2.TRAINING_RUN_STATUS_DEPLOYED, outcome.message
    assert outcome.result_version == 1 and outcome.served_version_before == 0
    assert outcome.candidate.score < outcome.served.score
    assert outcome.candidate.samples == outcome.served.samples == outcome.val_samples > 0
    assert await torchserve.client.served_version() == "1"

    # A request through TorchServe returns the new version's numbers.
    models = Path(app.settings.models_dir)
    best = NutritionModel.from_checkpoint(torch.load(models / "nutrition_model_best.pth", weights_only=True))
    with app.db.session() as session:
        sample = session.exec(Sample.__table__.select().limit(1)).first()
    embedding, probabilities = (
        np.frombuffer(sample.embedding, "<f4"),
        np.frombuffer(sample.class_probabilities, "<f4"),
    )
    served = await torchserve.client.predict_nutrition(embedding, probabilities)
    with torch.inference_mode():
        local = best(torch.from_numpy(embedding.copy())[None], torch.from_numpy(probabilities.copy())[None])[
            0
        ]
    assert served.version == 1
    assert served.values == pytest.approx(local.tolist(), rel=1e-4)

    # Checkpoints named as the original guide names them, a copy per run, and the loss curve.
    run_dir = models / "runs" / started.run_id
    for name in ("nutrition_model_best.pth", "nutrition_model_final.pth", "loss_curve.png"):
        assert (run_dir / name).stat().st_size > 0
    final = torch.load(models / "nutrition_model_final.pth", weights_only=True)
    assert final["model_args"] == {
        "embedding_dim": 48,
        "num_classes": 101,
        "hidden_size": 256,
        "linear": True,
    }
    assert final["classifier_version"] == classifier

    # Both versions calibrated on the held-out split: v1 for the day it is served, v0 recalibrated.
    with app.db.session() as session:
        calibrations = {v: session.get(ModelVersionRow, v).calibration for v in (0, 1)}
    assert calibrations[0]["samples"] == calibrations[1]["samples"] == outcome.val_samples
    labels = outcome.train_samples + outcome.val_samples  # grouped by every label each dish has
    assert sum(calibrations[0]["label_counts"]) == sum(calibrations[1]["label_counts"]) == labels

    versions = await app.gateway.ListModelVersions(trainer_pb2.ListModelVersionsRequest(), metadata=auth())
    assert versions.served_version == 1
    assert [(v.version, v.served) for v in versions.versions] == [(0, False), (1, True)]
    assert versions.versions[1].metrics.score == pytest.approx(outcome.candidate.score)

    # Rollback to the table, and forward again (v1 is re-registered from its archive).
    rolled = await app.gateway.RollbackModel(trainer_pb2.RollbackModelRequest(version=0), metadata=auth())
    assert (rolled.served_version, rolled.previous_version) == (0, 1)
    assert await torchserve.client.served_version() == "0"
    assert "1" not in await torchserve.client.registered_versions()
    await app.gateway.RollbackModel(trainer_pb2.RollbackModelRequest(version=1), metadata=auth())
    assert await torchserve.client.served_version() == "1"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await app.gateway.RollbackModel(trainer_pb2.RollbackModelRequest(version=42), metadata=auth())
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_noise_labels_are_not_deployed_and_the_outcome_says_why(system, torchserve):
    app = await system(use_chatgpt=False)
    classifier = await current_classifier(torchserve.client)
    add_samples(app.db, 240, classifier, noise(np.random.default_rng(7)))
    started = await start_run(app)
    outcome = (await watch(app, started.run_id))[-1].outcome
    assert outcome.status == common_pb2.TRAINING_RUN_STATUS_NOT_DEPLOYED, outcome.message
    assert "not deployed" in outcome.message and f"{outcome.served.score:.4f}" in outcome.message
    assert outcome.candidate.samples > 0 and outcome.result_version == 0
    assert await torchserve.client.served_version() == "0"
    run = await app.gateway.ListModelVersions(trainer_pb2.ListModelVersionsRequest(), metadata=auth())
    assert run.served_version == 0 and len(run.versions) == 1


async def test_second_run_while_one_runs_is_already_exists(system, torchserve):
    app = await system(use_chatgpt=False)
    classifier = await current_classifier(torchserve.client)
    add_samples(app.db, 120, classifier, learnable)
    first = await start_run(app, epochs=200, patience=0)
    error = await refused(app)
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first.run_id in error.details()
    await watch(app, first.run_id)  # let it finish before the next test


async def test_interrupted_run_ends_failed_after_restart_and_served_version_stays(system, torchserve):
    app = await system(services=("gateway",), use_chatgpt=False)
    with app.db.session() as session:
        session.add(TrainingRunRow(id="a" * 32, status=RunStatus.RUNNING, parameters={"epochs": 20}))
    restarted = await system(
        db_url=app.settings.database_url, services=("trainer", "gateway"), use_chatgpt=False
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{restarted.servers['trainer'].port}") as channel:
        trainer = trainer_pb2_grpc.TrainerServiceStub(channel)
        run = (await trainer.GetTrainingRun(
            trainer_pb2.GetTrainingRunRequest(run_id="a" * 32), metadata=auth(INTERNAL_TOKEN)
        )).run  # fmt: skip
        runs = await trainer.ListTrainingRuns(
            trainer_pb2.ListTrainingRunsRequest(), metadata=auth(INTERNAL_TOKEN)
        )
    assert run.status == common_pb2.TRAINING_RUN_STATUS_FAILED and run.message == "interrupted"
    assert [r.run_id for r in runs.runs] == ["a" * 32]
    assert await torchserve.client.served_version() == "0"


async def test_stale_embeddings_are_refused_until_backfilled(system, torchserve):
    app = await system(use_chatgpt=False, min_training_samples=3)
    ids = [
        (
            await app.gateway.AnalyzeMeal(
                gateway_pb2.AnalyzeMealRequest(image=photo(color=(40 * i, 9, 99))), metadata=auth()
            )
        ).sample_id
        for i in range(3)
    ]
    with app.db.session() as session:  # labelled, but embedded by a classifier no longer served
        for sample_id in ids:
            sample = session.get(Sample, sample_id)
            sample.classifier_version, sample.embedding = "old-classifier@1", b"\x00" * 8
            sample.dishes, sample.top1_dish = [["old_dish", 0.9]], "old_dish"
            sample.label_status = LabelStatus.LABELED
            sample.set_values("label", (600.0, 25.0, 20.0, 70.0))
            session.add(sample)
    classifier = await current_classifier(torchserve.client)
    error = await refused(app, epochs=1)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (
        error.details()
        == f"too little data: 0 of 3 (3 more need `make backfill` for classifier {classifier})"
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.servers['trainer'].port}") as channel:
        trainer = trainer_pb2_grpc.TrainerServiceStub(channel)
        response = await trainer.BackfillEmbeddings(
            trainer_pb2.BackfillEmbeddingsRequest(batch_size=2), metadata=auth(INTERNAL_TOKEN)
        )
    assert response.updated_samples == 3 and response.classifier == classifier
    with app.db.session() as session:
        for sample_id in ids:
            sample = session.get(Sample, sample_id)
            assert sample.classifier_version == classifier and len(sample.embedding) == 48 * 4
            assert sample.top1_dish == sample.dishes[0][0] != "old_dish"  # what the label policy counts
    started = await start_run(app, epochs=1)  # the same samples are training data now
    assert started.run_id
    await watch(app, started.run_id)


async def test_trainer_start_makes_torchserve_serve_the_databases_version_and_drops_strays(
    system, torchserve, model_store
):
    from foodcal.store import ModelVersionRow
    from model_store.archive import build_nutrition_mar, nutrition_mar_name
    from model_store.build import reference_model

    app = await system(services=("gateway",), use_chatgpt=False)
    for version in (1, 5):
        model = reference_model(model_store.parent / "checkpoints" / "food101")
        build_nutrition_mar(model, version, model_store / nutrition_mar_name(version))
    with app.db.session() as session:  # the database says v1 is served; TorchServe restarted with v0
        session.add(ModelVersionRow(version=0, mar_path=str(model_store / nutrition_mar_name(0))))
        session.add(
            ModelVersionRow(version=1, mar_path=str(model_store / nutrition_mar_name(1)), served=True)
        )
    await torchserve.client.register(torchserve.client.replicas[0], nutrition_mar_name(5))  # a stray
    await system(db_url=app.settings.database_url, services=("trainer",), use_chatgpt=False)
    for _ in range(100):
        if await torchserve.client.served_version() == "1":
            break
        await asyncio.sleep(0.2)
    assert await torchserve.client.served_version() == "1"
    for _ in range(50):
        if sorted(await torchserve.client.registered_versions()) == ["0", "1"]:
            break
        await asyncio.sleep(0.2)
    assert sorted(await torchserve.client.registered_versions()) == ["0", "1"]


async def test_auto_retrain_starts_a_run_after_enough_new_labels(system, torchserve):
    app = await system(services=("gateway",), use_chatgpt=False)
    classifier = await current_classifier(torchserve.client)
    add_samples(app.db, 60, classifier, learnable, seed=1)
    await system(
        db_url=app.settings.database_url,
        services=("trainer",),
        use_chatgpt=False,
        auto_retrain_every_n_labels=20,
    )
    add_samples(app.db, 40, classifier, learnable, seed=2)  # 40 new labels since the trainer started
    for _ in range(150):
        with app.db.session() as session:
            runs = session.exec(select(TrainingRunRow).order_by(TrainingRunRow.created_at)).all()
        if runs and runs[0].status not in (RunStatus.QUEUED, RunStatus.RUNNING):
            break
        await asyncio.sleep(0.2)
    assert runs, "no run was started"
    assert runs[0].status == RunStatus.DEPLOYED, runs[0].message
    assert len(runs) == 1  # one run per 20 new labels, not one per poll
