"""How ChatGPT's labels differ from the truth, learnt from people's corrections, per dish and nutrient.

Vision LLMs are wrong in systematic ways (~30% off on weighed plates; large and oily plates
under-counted), so a student that copies its teacher inherits the teacher's bias. For every
learnable correction of a labelled photo we take the log ratio truth / teacher per nutrient and
estimate each dish's ratio by empirical Bayes (normal-normal), in two levels:

    global     = m · max(0, 1 - se² / m²)     m: the mean log ratio (3 "no difference" pseudo-
                                              corrections added), se its standard error
    dish ratio = global + n_d / (n_d + k) · (dish mean - global),      k = sigma² / tau²

The global factor is the mean shrunk by its own signal-to-noise (the prior's spread estimated as
m² - se²): a few noisy corrections of an unbiased teacher move nothing, fifty of a teacher 30% off
move it almost all the way. sigma² is the spread of corrections of one dish (the teacher's per-photo
noise), tau² the spread between dishes (its per-dish bias), both estimated from the corrections by
the method of moments, so a dish moves a lot only when dishes really differ. With no corrections
every ratio is 1: the labels unchanged.

Each correction carries a weight in [0, 1] (trainer/data.py: one client's bounded share of a run):
its log ratio is scaled by its weight, and it still counts in full in the denominators, so the rest
of its weight is evidence of "no difference" rather than being re-spread over the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_store.worker.nutrition_model import NUTRIENTS

# Added to truth and teacher before the ratio: a 0 g fat label would make any ratio infinite.
OFFSET = np.array([10.0, 1.0, 1.0, 1.0])
MAX_LOG_RATIO = float(np.log(3.0))  # one wild pair cannot claim more than 3× (the flag rule is 2.5×)
# Pooled with the estimates while corrections are few, worth PRIOR_WEIGHT corrections (sigma²) or
# dishes (tau²): a per-photo spread of ~15% and a small per-dish one, so that a handful of corrections
# of different dishes is not taken for per-dish bias.
PRIOR_SIGMA2, PRIOR_TAU2 = 0.15**2, 0.05**2
PRIOR_WEIGHT_SIGMA2, PRIOR_WEIGHT_TAU2 = 10, 3
MIN_K, MAX_K = 0.1, 25.0
GLOBAL_PSEUDO_COUNT = 3  # "no difference" counted as 3 corrections: one wild plate moves nothing


@dataclass
class TeacherBias:
    log_ratio: np.ndarray  # [classes, 4]: log(truth / teacher) per dish (the classifier's top-1)
    global_log_ratio: np.ndarray  # [4]: for dishes no correction covers
    shrinkage: np.ndarray  # [4]: k per nutrient
    corrections: int  # corrections of labelled photos it was fitted on
    corrections_per_dish: np.ndarray  # [classes]

    @classmethod
    def none(cls, classes: int = 101) -> TeacherBias:
        zeros = np.zeros(4)
        return cls(np.zeros((classes, 4)), zeros, np.full(4, np.inf), 0, np.zeros(classes, dtype=np.int64))

    @classmethod
    def fit(
        cls,
        teacher: np.ndarray,  # [n, 4] ChatGPT's labels of corrected photos
        truth: np.ndarray,  # [n, 4] the corrections
        dishes: np.ndarray,  # [n] top-1 dish index of each photo
        weights: np.ndarray | None = None,  # [n] in [0, 1]
        classes: int = 101,
    ) -> TeacherBias:
        if len(truth) == 0:
            return cls.none(classes)
        weights = np.ones(len(truth)) if weights is None else np.clip(np.asarray(weights, "f8"), 0, 1)
        ratios = np.clip(
            np.log((truth + OFFSET) / (np.maximum(teacher, 0) + OFFSET)), -MAX_LOG_RATIO, MAX_LOG_RATIO
        )
        counts = np.bincount(dishes, minlength=classes)[:classes].astype(np.float64)
        weighted_sums = np.stack(
            [np.bincount(dishes, weights * ratios[:, j], minlength=classes)[:classes] for j in range(4)], 1
        )
        sigma2, tau2 = _spreads(ratios, dishes, counts)
        k = np.clip(sigma2 / np.maximum(tau2, 1e-9), MIN_K, MAX_K)
        # One correction's spread around the global ratio: its photo's noise plus its dish's bias.
        global_ratio = _global(weights[:, None] * ratios, sigma2 + tau2)
        deviation = weighted_sums - counts[:, None] * global_ratio  # of each dish's weighted ratios
        log_ratio = global_ratio + deviation / (counts[:, None] + k)
        return cls(log_ratio, global_ratio, k, len(truth), counts.astype(np.int64))

    def adjust(self, teacher: np.ndarray, dishes: np.ndarray) -> np.ndarray:
        """ChatGPT's labels moved towards the truth by their dish's learnt ratio."""
        adjusted = (np.maximum(teacher, 0) + OFFSET) * np.exp(self.log_ratio[dishes]) - OFFSET
        return np.maximum(adjusted, 0).astype(teacher.dtype)

    def as_dict(self, dish_names: list[str] | None = None, top: int = 10) -> dict:
        """What a run records: the global factor and the dishes with the most corrections."""
        order = np.argsort(-self.corrections_per_dish, kind="stable")[:top]
        return {
            "method": "empirical-Bayes shrinkage of log(truth / ChatGPT) per dish and nutrient",
            "corrections": self.corrections,
            "global_factor": dict(
                zip(NUTRIENTS, np.exp(self.global_log_ratio).round(4).tolist(), strict=True)
            ),
            # Strict JSON (PostgreSQL's json type refuses Infinity): no k without corrections.
            "shrinkage_k": (
                dict(zip(NUTRIENTS, self.shrinkage.round(4).tolist(), strict=True))
                if self.corrections
                else None
            ),
            "dishes": {
                (dish_names[d] if dish_names else str(d)): {
                    "corrections": int(self.corrections_per_dish[d]),
                    "factor": dict(zip(NUTRIENTS, np.exp(self.log_ratio[d]).round(4).tolist(), strict=True)),
                }
                for d in order
                if self.corrections_per_dish[d]
            },
        }


def _global(ratios: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """[4] the mean log ratio, shrunk towards 0 by its signal-to-noise (empirical Bayes). The spread
    of one ratio is the pooled estimate, never the sample's own: three corrections that happen to
    agree would otherwise look like certainty."""
    mean = ratios.sum(axis=0) / (len(ratios) + GLOBAL_PSEUDO_COUNT)
    se2 = np.maximum(spread, ratios.var(axis=0) if len(ratios) > 1 else 0) / len(ratios)
    return mean * np.maximum(0.0, 1 - se2 / np.maximum(mean**2, 1e-12))


def _spreads(ratios: np.ndarray, dishes: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sigma², tau²) per nutrient by the method of moments, pooled with the prior where data are thin."""
    covered = counts > 0
    sums = np.stack([np.bincount(dishes, ratios[:, j], minlength=len(counts)) for j in range(4)], 1)
    means = sums[covered] / counts[covered, None]
    within = ratios - sums[dishes] / counts[dishes, None]  # each correction minus its dish's mean
    freedom = len(ratios) - covered.sum()  # corrections beyond the first of each dish
    # Pool the estimate with the prior as if the prior were worth 10 observations of each kind.
    sigma2 = (np.square(within).sum(axis=0) + PRIOR_WEIGHT_SIGMA2 * PRIOR_SIGMA2) / (
        freedom + PRIOR_WEIGHT_SIGMA2
    )
    dishes_covered = len(means)
    between = np.zeros(4)
    if dishes_covered > 1:
        between = np.maximum(means.var(axis=0, ddof=1) - sigma2 * np.mean(1 / counts[covered]), 0)
    tau2 = (between * max(dishes_covered - 1, 0) + PRIOR_WEIGHT_TAU2 * PRIOR_TAU2) / (
        max(dishes_covered - 1, 0) + PRIOR_WEIGHT_TAU2
    )
    return sigma2, tau2
