"""What a run learns: the first run with the original defaults learns a systematic offset; training
is seeded and reloads exactly; the splits are stable; an epoch replaces the closed form only when
clearly better."""

import numpy as np
import pytest
import torch

from foodcal.v1 import common_pb2
from model_store.worker.nutrition_model import NutritionModel
from tests.trainer_helpers import TABLE, above_the_table, add_samples, constant, learnable, start_run, watch
from trainer.backfill import current_classifier


def test_training_is_seeded_and_checkpoints_reload_to_the_same_predictions(tmp_path):
    from trainer.data import Dataset
    from trainer.training import TrainingParameters, train

    rng = np.random.default_rng(3)
    embeddings = rng.normal(size=(80, 48)).astype("f4")
    logits = rng.normal(size=(80, 101))
    probabilities = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype("f4")
    targets = np.array([learnable(e, p) for e, p in zip(embeddings, probabilities, strict=True)], dtype="f4")
    data = Dataset(
        [f"s{i}" for i in range(80)], embeddings, probabilities, targets, [f"p{i}" for i in range(80)]
    )
    reference = NutritionModel.from_table(torch.from_numpy(TABLE), embedding_dim=48)
    train_data, early_stopping, *_ = data.split()
    params = TrainingParameters(epochs=3)
    first, _, _ = train(reference, train_data, early_stopping, params, on_epoch=lambda e: None)
    second, _, _ = train(reference, train_data, early_stopping, params, on_epoch=lambda e: None)
    x = (torch.from_numpy(embeddings), torch.from_numpy(probabilities))
    assert torch.equal(first(*x), second(*x))
    torch.save(first.checkpoint(), tmp_path / "best.pth")
    reloaded = NutritionModel.from_checkpoint(torch.load(tmp_path / "best.pth", weights_only=True))
    assert torch.equal(reloaded(*x), first(*x))


def test_split_is_stable_a_fifth_held_out_and_early_stopping_never_touches_validation():
    from trainer.data import Dataset, in_test_set, is_early_stopping, is_validation

    ids = [f"{i:032x}" for i in range(2000)]
    assert 0.17 < sum(map(is_validation, ids)) / len(ids) < 0.23
    assert 0.08 < sum(map(is_early_stopping, ids)) / len(ids) < 0.12
    assert not any(is_validation(i) and is_early_stopping(i) for i in ids)
    data = Dataset(
        ids, np.zeros((2000, 4), "f4"), np.zeros((2000, 101), "f4"), np.zeros((2000, 4), "f4"), ids
    )
    train_data, early_stopping, validation, truth = data.split()
    assert len(truth) == 0  # no corrections: nothing held out as the truth
    test = [i for i in ids if in_test_set(i)]  # the quality test set is on no side (test_quality.py)
    assert sorted(train_data.ids + early_stopping.ids + validation.ids + test) == sorted(ids)
    assert data.split().validation.ids == validation.ids  # stable across runs


@pytest.mark.parametrize(
    "target",
    [above_the_table(1.6), constant((612.0, 25.0, 22.0, 70.0))],
    ids=["labels_60_percent_above_the_table", "constant_labels"],
)
async def test_the_first_run_learns_a_systematic_offset_with_the_original_defaults(
    system, torchserve, target
):
    app = await system(use_chatgpt=False)
    classifier = await current_classifier(torchserve.client)
    add_samples(app.db, 60, classifier, target)
    started = await start_run(app)  # the original defaults: 20 epochs, batch 8, lr 0.001
    outcome = (await watch(app, started.run_id))[-1].outcome
    assert outcome.status == common_pb2.TRAINING_RUN_STATUS_DEPLOYED, outcome.message
    assert await torchserve.client.served_version() == "1"
    # Photos the run never saw, answered by TorchServe: calories within 10% of the labels.
    rng = np.random.default_rng(99)
    for _ in range(10):
        embedding = rng.normal(size=48).astype("<f4")
        logits = rng.normal(size=101) * 2
        probabilities = (np.exp(logits) / np.exp(logits).sum()).astype("<f4")
        served = await torchserve.client.predict_nutrition(embedding, probabilities)
        expected = target(embedding, probabilities)
        assert served.values[0] == pytest.approx(expected[0], rel=0.10)


def test_an_epoch_replaces_the_closed_form_only_when_clearly_better():
    import torch

    from trainer.training import _clearly_better

    start = torch.tensor([1.0, 1.0, 1.0, 1.0])
    assert not _clearly_better(torch.tensor([0.9, 1.1, 0.95, 1.05]), than=start)  # lower mean, by luck
    assert _clearly_better(torch.tensor([0.8, 0.82, 0.79, 0.81]), than=start)  # lower on every sample
    assert not _clearly_better(torch.tensor([1.2, 1.1, 1.3, 1.2]), than=start)
