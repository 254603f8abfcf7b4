"""Calibration at its edges: a rank beyond n is no range (uncalibrated, not the largest score), and
a chance label weighs by the exploration rate it was drawn at, not today's."""

import numpy as np

from foodcal.domain.calibration import exploration_reason, fit, label_weight

RNG = np.random.default_rng(0)


def _fit(n: int, level: float, weights=None):
    predictions = RNG.uniform(200, 800, size=(n, 4))
    targets = predictions * RNG.uniform(0.5, 1.5, size=(n, 4))
    probabilities = np.full((n, 3), 0.1)
    probabilities[:, 0] = 0.8
    return fit(predictions, targets, probabilities, np.array([100, 0, 0]), level, weights)


def test_a_level_beyond_what_the_samples_can_bound_is_uncalibrated_not_clamped():
    calibration = _fit(30, 0.99)  # ceil(31 x 0.99) = 31 > 30: no score bounds 99% of errors
    assert not calibration.calibrated
    _, _, group = calibration.ranges([500.0] * 4, np.array([0.8, 0.1, 0.1]))
    assert group == "uncalibrated"
    assert _fit(30, 0.99, weights=np.ones(30)).half_widths == {}  # the weighted quantile too
    assert _fit(200, 0.99).calibrated  # enough samples: a range


def test_a_chance_label_weighs_by_the_rate_it_was_drawn_at():
    drawn_at_2_percent = exploration_reason(0.02)
    assert label_weight(drawn_at_2_percent, exploration=0.10) == 1 / 0.02  # the rate changed since
    assert label_weight(exploration_reason(0.005), exploration=0.10) == 1 / 0.005  # not rounded away
    assert label_weight("exploration (5% of photos)", exploration=0.10) == 1 / 0.05  # older reasons
    assert label_weight("exploration", exploration=0.10) == 1 / 0.10  # says no rate: today's
    assert label_weight("classifier unsure: top-1 0.40 < 0.60", exploration=0.10) == 1.0
