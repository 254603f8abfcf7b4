"""Which corrections a run learns from, and how much one client may weigh in it.

A correction is a person's word against ChatGPT's and ours. One far from both (the gateway flags it
when it is stored, gateway/corrections.py) is kept but not learned from until an admin confirms it,
or until it is consistent: vision LLMs are 30-40% off on some dishes, so several corrections of one
dish that agree with each other are the signal, not outliers. A rejected correction is never used.

Where several clients contribute to a run, none may move the shared model alone: each keeps at most
max(share, 1 / clients) of the run's photos, and its corrections weigh at most that share of the
corrections the teacher's bias is learnt from (trainer/teacher_bias.py). One client: no cap.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from foodcal.store import CorrectionReview

AGREEMENT = math.log(1.25)  # two corrections agree when their ratios to the reference are within 25%
MIN_AGREEING = 2  # a flagged correction is trusted when this many others of its dish agree with it
KCAL_OFFSET = 10.0


def correction_ratio(correction_kcal: float, reference_kcal: float | None) -> float:
    """log(correction / reference) in calories; NaN without a reference (ChatGPT's, else ours)."""
    if reference_kcal is None:
        return math.nan
    return math.log((correction_kcal + KCAL_OFFSET) / (max(reference_kcal, 0.0) + KCAL_OFFSET))


def trusted(flags: list[str], reviews: list[str], dishes: list[int], ratios: list[float]) -> np.ndarray:
    """[n] bool: which of n corrections a run may learn from and score against."""
    n = len(flags)
    ok = np.ones(n, dtype=bool)
    by_dish: dict[int, list[int]] = defaultdict(list)
    for index in range(n):
        if reviews[index] != CorrectionReview.REJECTED:
            by_dish[dishes[index]].append(index)
    for index in range(n):
        if reviews[index] == CorrectionReview.REJECTED:
            ok[index] = False
        elif flags[index] and reviews[index] != CorrectionReview.CONFIRMED:
            agreeing = sum(
                1
                for other in by_dish[dishes[index]]
                if other != index and abs(ratios[other] - ratios[index]) <= AGREEMENT
            )  # NaN never agrees
            ok[index] = agreeing >= MIN_AGREEING
    return ok


def client_cap(clients: int, share: float) -> float:
    """The most of a run one client may weigh: everything when it is the only one."""
    return 1.0 if clients <= 1 else max(share, 1.0 / clients)


def clients(owners: list[str | None]) -> int:
    """Clients among the owners; None (a sample from before owners were recorded) is none."""
    return len({owner for owner in owners if owner is not None})


def capped_rows(owners: list[str | None], order: list[str], share: float) -> np.ndarray:
    """[n] bool: each owner's rows kept up to the cap of the run's rows, the rest dropped. `order`
    (the photo's hash) picks which rows stay, so the same rows stay from run to run."""
    cap = client_cap(clients(owners), share)
    limit = max(1, math.floor(cap * len(owners)))
    keep = np.zeros(len(owners), dtype=bool)
    kept: dict[str | None, int] = defaultdict(int)
    for index in sorted(range(len(owners)), key=lambda i: order[i]):
        owner = owners[index]
        if owner is None or kept[owner] < limit:
            keep[index] = True
            kept[owner] += 1
    return keep


def correction_weights(correctors: list[str | None], clients: int, share: float) -> np.ndarray:
    """[n] weight of each correction: a client's corrections together weigh at most the cap of all."""
    cap, total = client_cap(clients, share), len(correctors)
    counts: dict[str | None, int] = defaultdict(int)
    for corrector in correctors:
        counts[corrector] += 1
    return np.array(
        [1.0 if c is None else min(1.0, cap * total / counts[c]) for c in correctors], dtype=np.float64
    )


def trusted_corrections(rows: list, dishes: np.ndarray) -> np.ndarray:
    """[n] bool: which of the samples' (foodcal.store.Sample rows) corrections may be learnt from
    or scored against; `dishes`: each sample's top-1 dish index."""
    corrected = [index for index, row in enumerate(rows) if row.corrected]
    ok = trusted(
        [rows[i].correction.flag for i in corrected],
        [rows[i].correction.review for i in corrected],
        [int(dishes[i]) for i in corrected],
        [correction_ratio(rows[i].correction.calories_kcal, _reference_kcal(rows[i])) for i in corrected],
    )
    mask = np.zeros(len(rows), dtype=bool)
    mask[corrected] = ok
    return mask


def _reference_kcal(row) -> float | None:
    """What a correction is measured against: ChatGPT's label, else our prediction."""
    label_kcal = row.label_job.label_calories_kcal
    return label_kcal if label_kcal is not None else row.pred_calories_kcal
