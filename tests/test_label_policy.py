"""LABEL_POLICY=uncertain and the calibrated ranges, through the real gateway, labeler and stub."""

import numpy as np
import pytest

from foodcal.domain.calibration import UNCALIBRATED_HALF_WIDTH, Calibration, label_weight
from foodcal.store import LabelStatus, ModelVersionRow, Sample
from foodcal.v1 import common_pb2
from gateway.label_policy import PolicySettings, decide
from tests.conftest import photo
from tests.test_gateway import analyze, get_sample


@pytest.fixture(autouse=True)
def read_calibrations_every_time(monkeypatch):
    monkeypatch.setattr("gateway.policy_inputs.REFRESH_S", 0.0)  # the rows a test writes count at once


CONFIDENT = dict(
    label_policy="uncertain",
    label_policy_exploration=0.0,
    label_policy_min_confidence=0.0,  # the demo classifier is untrained: its top-1 is never sure
    label_policy_min_dish_labels=3,
    label_policy_max_relative_width=0.25,
)


def calibrate_version0(app, half_width: float) -> None:
    """Version 0 calibrated as a run would leave it: every group narrow (or wide)."""
    calibration = Calibration(samples=200, half_widths={"all": [half_width] * 4}, denominators=[1.0] * 4)
    with app.db.session() as session:
        row = session.get(ModelVersionRow, 0)
        row.calibration = calibration.as_dict()
        session.add(row)


def add_labels(app, dish: str, count: int) -> None:
    with app.db.session() as session:
        for index in range(count):
            session.add(
                Sample(
                    image_sha256=f"{index:064x}",
                    image_path="x",
                    top1_dish=dish,
                    label_status=LabelStatus.LABELED,
                )
            )


async def test_version0_answers_with_an_honest_wide_uncalibrated_range(system, openai_stub):
    app = await system(use_chatgpt=False)
    answer = await analyze(app)
    own, band = answer.own_prediction, answer.own_range
    assert not band.calibrated and band.group == "uncalibrated" and band.level == pytest.approx(0.8)
    assert band.low.calories_kcal == pytest.approx(
        own.calories_kcal * (1 - UNCALIBRATED_HALF_WIDTH), rel=1e-6
    )
    assert band.high.calories_kcal == pytest.approx(
        own.calories_kcal * (1 + UNCALIBRATED_HALF_WIDTH), rel=1e-6
    )
    assert answer.label_policy_reason == "USE_CHATGPT=false"


async def test_a_confident_photo_of_a_well_labelled_dish_makes_no_call(system, openai_stub):
    app = await system(**CONFIDENT)
    first = await analyze(app, photo(color=(10, 20, 30)))  # the dish has no labels yet: asked
    assert openai_stub.calls == 1 and first.label_status == common_pb2.LABEL_STATUS_LABELED
    assert first.label_policy_reason.startswith("dish has 0 labels")
    dish = first.dishes[0].label
    add_labels(app, dish, 5)
    calibrate_version0(app, 0.1)
    second = await analyze(app, photo(color=(10, 20, 30), size=(321, 240)))  # same dish, new photo
    assert second.dishes[0].label == dish
    assert openai_stub.calls == 1, "a call was made for a confident photo"
    assert second.label_status == common_pb2.LABEL_STATUS_NOT_REQUESTED
    assert second.source == common_pb2.NUTRITION_SOURCE_REFERENCE and second.own_range.calibrated
    assert second.label_policy_reason.startswith("confident")
    assert second.own_range.high.calories_kcal == pytest.approx(second.own_prediction.calories_kcal * 1.1)
    stored = await get_sample(app, second.sample_id)
    assert stored.label_policy_reason == second.label_policy_reason


@pytest.mark.parametrize(
    "overrides, reason",
    [
        (dict(label_policy_min_confidence=0.99), "classifier unsure"),
        (dict(label_policy_max_relative_width=0.05), "calories range ±10% wider than ±5%"),
    ],
)
async def test_an_unsure_photo_or_a_wide_range_is_asked(system, openai_stub, overrides, reason):
    app = await system(**{**CONFIDENT, **overrides})
    probe = await analyze(app, photo(color=(90, 20, 30)))
    add_labels(app, probe.dishes[0].label, 5)
    calibrate_version0(app, 0.1)
    calls = openai_stub.calls
    answer = await analyze(app, photo(color=(90, 20, 30), size=(322, 240)))
    assert openai_stub.calls == calls + 1 and answer.label_status == common_pb2.LABEL_STATUS_LABELED
    assert answer.label_policy_reason.startswith(reason), answer.label_policy_reason


async def test_exploration_labels_its_share_of_photos_the_policy_would_skip(system, openai_stub):
    app = await system(
        **{**CONFIDENT, "label_policy_exploration": 0.5, "use_own_model_instead_chatgpt": True}
    )
    probe = await analyze(app, photo(color=(200, 20, 30)))
    add_labels(app, probe.dishes[0].label, 5)
    calibrate_version0(app, 0.1)
    reasons = []
    for index in range(60):
        answer = await analyze(app, photo(color=(200, 20, 30), size=(330 + index, 240)))
        if answer.dishes[0].label == probe.dishes[0].label:
            reasons.append(answer.label_policy_reason)
    explored = sum(reason.startswith("exploration") for reason in reasons)
    skipped = sum(reason.startswith("confident") for reason in reasons)
    assert explored + skipped == len(reasons) >= 40
    # Binomial(n >= 40, 0.5): outside [15%, 85%] with probability < 1e-5.
    assert 0.15 * len(reasons) <= explored <= 0.85 * len(reasons)


def test_the_policy_always_asks_by_default_and_records_why():
    decision = decide(
        PolicySettings(), top1_probability=0.99, dish_labels=500, relative_width=0.01, explore_draw=0.9
    )
    assert decision.ask and decision.reason == "policy always"


def test_ranges_cover_their_level_on_held_out_samples():
    """Split-conformal: calibrated on one half, the other half falls inside at about the level."""
    from foodcal.domain.calibration import coverage, fit

    rng = np.random.default_rng(3)
    n = 8000
    probabilities = np.full((n, 101), 0.001)
    top1 = rng.integers(0, 101, n)
    probabilities[np.arange(n), top1] = rng.uniform(0.2, 0.99, n)
    noise = np.where(probabilities.max(axis=1) > 0.8, 0.1, 0.3)[:, None]  # unsure photos miss more
    predictions = rng.uniform(100, 900, (n, 4))
    targets = predictions * (1 + rng.normal(0, 1, (n, 4)) * noise)
    counts = np.full(101, 50)
    calibration = fit(predictions[: n // 2], targets[: n // 2], probabilities[: n // 2], counts, level=0.8)
    covered = coverage(calibration, predictions[n // 2 :], targets[n // 2 :], probabilities[n // 2 :])
    assert np.all(np.abs(covered - 0.8) < 0.04), covered  # seeded: the same numbers every run
    assert calibration.half_widths["c2"][0] < calibration.half_widths["c0"][0]  # sure photos: narrower


def test_exploration_is_only_for_photos_no_rule_asks_for_and_says_how_likely_it_was():
    settings = PolicySettings(policy="uncertain", exploration=0.05)
    unsure = decide(settings, top1_probability=0.3, dish_labels=50, relative_width=0.1, explore_draw=0.0)
    assert unsure.reason.startswith("classifier unsure") and unsure.propensity == 1.0
    chance = decide(settings, top1_probability=0.95, dish_labels=50, relative_width=0.1, explore_draw=0.01)
    assert chance.reason.startswith("exploration") and chance.propensity == 0.05
    assert (
        label_weight(chance.reason, 0.05) == pytest.approx(20.0) and label_weight(unsure.reason, 0.05) == 1.0
    )


def test_weighing_chance_labels_keeps_ranges_calibrated_for_the_photos_the_policy_skipped():
    """Within one group the policy labels every hard photo (say, a rarely labelled dish) but only
    5% of the easy ones; unweighted, the ranges fit the hard ones and are too wide for traffic."""
    from foodcal.domain.calibration import coverage, fit

    rng = np.random.default_rng(11)
    n = 40000
    probabilities = np.full((n, 101), 0.0005)
    probabilities[:, 7] = 0.95  # one confident group
    hard = rng.random(n) < 0.2
    predictions = np.full((n, 4), 500.0)
    targets = predictions * (1 + rng.normal(0, 1, (n, 4)) * np.where(hard, 0.4, 0.1)[:, None])
    asked = hard | (rng.random(n) < 0.05)
    weights = np.where(hard, 1.0, 20.0)[asked]
    counts = np.full(101, 100)
    cal = asked.copy()
    cal[n // 2 :] = False
    unweighted = fit(predictions[cal], targets[cal], probabilities[cal], counts)
    weighted = fit(predictions[cal], targets[cal], probabilities[cal], counts, weights=weights[: cal.sum()])
    traffic = slice(n // 2, n)  # every photo, asked or not
    args = (predictions[traffic], targets[traffic], probabilities[traffic])
    assert np.all(coverage(unweighted, *args) > 0.9)  # far above the level: too wide
    assert np.all(np.abs(coverage(weighted, *args) - 0.8) < 0.03)
