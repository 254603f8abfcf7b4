"""What live traffic says about a version on trial: its answers, the baseline's answers for the
same photos, and ChatGPT's labels that arrived for them (paired, as the offline gate compares)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from sqlmodel import col, select

from foodcal.nutrition import NUTRIENTS
from foodcal.store import Database, LabelStatus, Rollout, Sample
from model_store.nutrition_model import NutritionModel
from trainer.scores import MIN_DISH_SAMPLES, Score


@dataclass
class Evidence:
    version: np.ndarray  # [n, 4]: what the version on trial answered (or would have)
    baseline: np.ndarray  # [n, 4]: the version it is compared with, for the same photos
    labels: np.ndarray  # [n, 4]: ChatGPT's labels for them

    def __len__(self) -> int:
        return len(self.labels)


def _columns(prefix: str) -> list:
    return [getattr(Sample, f"{prefix}_{name}") for name in NUTRIENTS]


def _labelled():
    return (Sample.label_status == LabelStatus.LABELED, *(c.is_not(None) for c in _columns("label")))


def challenger_evidence(db: Database, rollout: Rollout) -> Evidence:
    """Photos that both the challenger and the champion answered since the challenger went live
    (one shown, the other stored beside it), with a ChatGPT label."""
    pair = (rollout.version, rollout.baseline_version)
    with db.session() as session:
        rows = session.exec(
            select(Sample.pred_model_version, *_columns("pred"), *_columns("paired"), *_columns("label"))
            .where(*_labelled(), Sample.created_at >= rollout.started_at)
            .where(col(Sample.pred_model_version).in_(pair), col(Sample.paired_model_version).in_(pair))
            .where(Sample.pred_model_version != Sample.paired_model_version)
            .where(*(c.is_not(None) for c in _columns("paired")))
        ).all()
    values = np.array([row[1:] for row in rows], dtype=np.float64).reshape(-1, 12)
    answered, paired, labels = values[:, :4], values[:, 4:8], values[:, 8:]
    by_challenger = np.array([row[0] == rollout.version for row in rows], dtype=bool)[:, None]
    return Evidence(
        np.where(by_challenger, answered, paired), np.where(by_challenger, paired, answered), labels
    )


def served_evidence(db: Database, rollout: Rollout, window: int, baseline: NutritionModel) -> Evidence:
    """The served version's last `window` labelled answers since it was served, and what the
    version before it answers for the same photos, computed from their stored features."""
    with db.session() as session:
        rows = session.exec(
            select(Sample.embedding, Sample.class_probabilities, *_columns("pred"), *_columns("label"))
            .where(*_labelled(), Sample.pred_model_version == rollout.version)
            .where(Sample.created_at >= rollout.served_at)
            .where(col(Sample.embedding).is_not(None), col(Sample.class_probabilities).is_not(None))
            .order_by(col(Sample.created_at).desc())
            .limit(window)
        ).all()
    # Photos embedded by another classifier than the baseline reads cannot be compared.
    rows = [row for row in rows if len(row[0]) == 4 * baseline.embedding_dim]
    if not rows:
        empty = np.zeros((0, 4))
        return Evidence(empty, empty, empty)
    embeddings = np.stack([np.frombuffer(row[0], "<f4") for row in rows])
    probabilities = np.stack([np.frombuffer(row[1], "<f4") for row in rows])
    with torch.inference_mode():
        predicted = baseline.eval()(torch.from_numpy(embeddings), torch.from_numpy(probabilities))
    values = np.array([row[2:] for row in rows], dtype=np.float64)
    return Evidence(values[:, :4], predicted.numpy().astype(np.float64), values[:, 4:])


def live_scores(db: Database, min_dish_samples: int = MIN_DISH_SAMPLES) -> dict[int, Score]:
    """Per version: what it answered, or answered beside the shown version (a challenger in shadow,
    the champion in a split), against the ChatGPT label the photo got later."""
    by_version: dict[int, list] = defaultdict(list)
    for prefix in ("pred", "paired"):
        version = getattr(Sample, f"{prefix}_model_version")
        columns = [*_columns(prefix), *_columns("label")]
        with db.session() as session:
            rows = session.exec(
                select(version, Sample.top1_dish, *columns).where(
                    *_labelled(), col(version).is_not(None), *(c.is_not(None) for c in columns)
                )
            ).all()
        for row in rows:
            by_version[row[0]].append(row)
    scores = {}
    for version, group in by_version.items():
        values = np.array([row[2:] for row in group], dtype=np.float64)
        scores[version] = Score.of(values[:, :4], values[:, 4:], [row[1] for row in group], min_dish_samples)
    return scores
