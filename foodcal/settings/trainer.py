"""The trainer's settings: when and on what it trains, and how a new version goes live."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from foodcal.settings.common import CommonSettings


class TrainerSettings(CommonSettings):
    trainer_port: int = Field(50053, ge=0, le=65535)
    # Prometheus `/metrics` (on BIND_HOST; 0 = any free port, logged at start-up).
    trainer_metrics_port: int = Field(9153, ge=0, le=65535)
    models_dir: Path = Path("models")

    min_training_samples: int = Field(50, ge=1)
    auto_retrain_every_n_labels: int = Field(0, ge=0)
    auto_retrain_interval_s: float = Field(0.0, ge=0)
    # Where several clients contribute to a run, the most of its photos and of its corrections one
    # client may weigh (trainer/trust.py); a deployment with a single client is never capped.
    training_max_share_per_client: float = Field(0.3, gt=0, le=1)
    # The level of the calibrated ranges shown with our numbers (foodcal/domain/calibration.py).
    range_level: float = Field(0.8, gt=0, lt=1)
    swap_drain_s: float = Field(0.5, ge=0)

    # How a version that passed the offline gate goes live (trainer/rollout.py): `replace` serves it
    # at once; `shadow` and `split` make it a challenger until ROLLOUT_MIN_SAMPLES live labels decide.
    rollout: Literal["replace", "shadow", "split"] = "replace"
    rollout_split_percent: float = Field(10.0, gt=0, lt=100)
    rollout_min_samples: int = Field(100, ge=10)
    # A served version is rolled back by itself when the version it replaced is clearly better on
    # its last ROLLBACK_WINDOW live labels (at least ROLLBACK_MIN_SAMPLES): see trainer/rollout.py.
    rollback_window: int = Field(200, ge=10)
    rollback_min_samples: int = Field(50, ge=10)
    rollout_check_interval_s: float = Field(10.0, gt=0)
