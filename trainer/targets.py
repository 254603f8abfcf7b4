"""A run's training targets, towards the truth: corrections where people gave them, else ChatGPT's
labels adjusted by the bias the learnable corrections show (trainer/teacher_bias.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np

from trainer.data import Dataset
from trainer.teacher_bias import TeacherBias


def learn_teacher_bias(*parts: Dataset) -> TeacherBias:
    """The teacher's bias from the learnable corrections of labelled photos in `parts`."""
    teacher, truth, dishes, weights = [], [], [], []
    for part in parts:
        both = part.has_label() & part.has_correction()
        teacher.append(part.teacher()[both])
        truth.append(part.truth()[both])
        dishes.append(part.dishes[both])
        weights.append(
            np.ones(int(both.sum())) if part.correction_weights is None else part.correction_weights[both]
        )
    return TeacherBias.fit(
        np.concatenate(teacher).astype("f8"),
        np.concatenate(truth).astype("f8"),
        np.concatenate(dishes).astype(np.int64),
        np.concatenate(weights),
    )


def towards_truth(part: Dataset, bias: TeacherBias, corrections: bool = True) -> Dataset:
    """`part` with targets the truth where a person gave it (if `corrections`), else ChatGPT's label
    adjusted by the teacher's learnt bias; photos with neither are dropped."""
    labels = part.teacher()
    adjusted = bias.adjust(np.nan_to_num(labels), part.dishes) if len(part) else labels
    targets = np.where(part.has_label()[:, None], adjusted, np.nan)
    if corrections:
        targets = np.where(part.has_correction()[:, None], part.truth(), targets)
    keep = ~np.isnan(targets).any(axis=1)
    return replace(part.subset(keep), targets=targets[keep].astype(np.float32))


class RunData(NamedTuple):
    """What one training run reads: its sides with their targets, and the teacher's learnt bias."""

    train: Dataset
    early_stopping: Dataset
    validation: Dataset  # ChatGPT's labels, adjusted by `bias`
    truth: Dataset  # the held-out corrections
    bias: TeacherBias


def run_data(dataset: Dataset) -> RunData:
    """Towards the truth: corrections where people gave them, else ChatGPT's labels adjusted by the
    bias the learnable corrections show (trainer/teacher_bias.py)."""
    split = dataset.split()
    bias = learn_teacher_bias(split.train, split.early_stopping)
    return RunData(
        towards_truth(split.train, bias),
        towards_truth(split.early_stopping, bias),
        towards_truth(split.validation, bias, corrections=False),
        split.truth,
        bias,
    )
