"""The trainer's closed-form start: our leave-one-out ridge against scikit-learn's RidgeCV."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge, RidgeCV

from trainer.closed_form import ALPHAS, Scaling, fit_ridge, ridge_loo


@pytest.mark.parametrize("samples, features", [(300, 40), (60, 300)], ids=["tall", "wide"])
def test_leave_one_out_ridge_equals_scikit_learns_ridgecv(samples, features):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(samples, features)) * rng.uniform(0.1, 3, size=features) + 2.0
    truth = rng.normal(size=(features, 4)) * (rng.random((features, 4)) < 0.2)
    y = x @ truth + rng.normal(size=(samples, 4)) * np.array([0.3, 1, 3, 10]) + 5.0
    coef, intercept, alphas, _ = ridge_loo(x, y, ALPHAS)
    reference = RidgeCV(alphas=ALPHAS, alpha_per_target=True, store_cv_results=True).fit(x, y)
    # Each output's penalty has scikit-learn's least leave-one-out error. Not always its very alpha:
    # in the wide case two tiny penalties nearly interpolate and tie to 2e-6, and which one wins
    # depends on the BLAS build's rounding (this machine's OpenBLAS picked 1e-3, ours 3e-3).
    loo = reference.cv_results_.mean(axis=0)  # [outputs, alphas]
    ours = loo[np.arange(4), [list(ALPHAS).index(alpha) for alpha in alphas]]
    np.testing.assert_allclose(ours, loo.min(axis=1), rtol=1e-5)
    assert len(set(alphas)) > 1  # the outputs really chose different penalties
    # ...and at those penalties the same fit as scikit-learn's.
    for output, alpha in enumerate(alphas):
        ridge = Ridge(alpha=alpha).fit(x, y[:, output])
        np.testing.assert_allclose(coef[output], ridge.coef_, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(intercept[output], ridge.intercept_, rtol=1e-6, atol=1e-8)


def test_an_unseen_dish_does_not_blow_up_indicator_features():
    """Dish 3 never occurs in training; a test photo of it must get a sane prediction (standardising
    its near-constant indicator column would multiply it by ~1/spread)."""
    rng = np.random.default_rng(2)
    dishes = rng.integers(0, 3, size=60)
    probabilities = np.full((60, 4), 0.001) + np.eye(4)[dishes] * 0.997
    residual = (np.array([10.0, -5.0, 2.0, 0.0])[dishes] + rng.normal(size=60))[:, None]
    fit = fit_ridge([(probabilities, Scaling.INDICATOR)], residual)
    unseen = np.array([[0.001, 0.001, 0.001, 0.997]])
    assert abs((unseen @ fit.weight.T + fit.bias)[0, 0]) < 10


def test_too_few_samples_give_the_mean_residual():
    fit = fit_ridge([(np.ones((2, 3)), Scaling.DENSE)], np.array([[1.0], [3.0]]))
    assert fit.bias.tolist() == [2.0] and not fit.weight.any()
