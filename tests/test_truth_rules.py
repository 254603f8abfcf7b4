"""The rules that make corrections the truth, one at a time: which far corrections count, how much
one client weighs, the teacher's bias and its shrinkage, and the gate's choice of evidence
(tests/test_truth.py drives them through the running system)."""

import json

import numpy as np
import pytest
import torch

from model_store.reference import food101_labels
from trainer.data import Dataset
from trainer.gate import EVIDENCE_CHATGPT, EVIDENCE_TRUTH, MIN_TRUTH_PHOTOS, decide
from trainer.teacher_bias import TeacherBias
from trainer.trust import capped_rows, correction_weights, trusted


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
