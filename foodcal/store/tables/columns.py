"""What every table shares: ids, timestamps, and the four nutrients stored as `<prefix>_<name>`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from foodcal.domain.nutrition import NUTRIENTS

Nutrients = tuple[float, float, float, float]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


def nutrient_names(prefix: str = "") -> tuple[str, ...]:
    """The four columns' names: `calories_kcal`…, or `<prefix>_calories_kcal`… with a prefix."""
    return tuple(f"{prefix}_{name}" if prefix else name for name in NUTRIENTS)


def nutrients_of(row: object, prefix: str = "") -> Nutrients | None:
    """The four nutrients stored on `row` (under `prefix`), or None when any is missing."""
    values = tuple(getattr(row, name) for name in nutrient_names(prefix))
    return None if any(v is None for v in values) else values  # type: ignore[return-value]


def set_nutrients(row: object, prefix: str, values: Nutrients | None) -> None:
    for name, value in zip(nutrient_names(prefix), values or (None,) * 4, strict=True):
        setattr(row, name, value)
