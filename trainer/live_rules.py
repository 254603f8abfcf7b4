"""The rules of live decisions (trainer/rollout.py applies them): the rollout policy from the
settings, the bar for an automatic rollback, and the numbers each decision records."""

from __future__ import annotations

from dataclasses import dataclass

from foodcal.settings import TrainerSettings
from trainer.gate import EVIDENCE_TRUTH, Comparison
from trainer.live_evidence import Evidence

ROLLBACK_MARGIN = 0.05
ROLLBACK_CONFIDENCE = 0.95
ROLLBACK_RULE = (
    f"the version it replaced scores at least {ROLLBACK_MARGIN:.0%} lower "
    f"in {ROLLBACK_CONFIDENCE:.0%} of paired bootstrap resamples"
)


@dataclass(frozen=True)
class RolloutPolicy:
    """ROLLOUT_* and ROLLBACK_* (their defaults live in foodcal/settings/trainer.py only)."""

    mode: str
    split_percent: float
    min_samples: int
    rollback_window: int
    rollback_min_samples: int

    @classmethod
    def from_settings(cls, settings: TrainerSettings) -> RolloutPolicy:
        return cls(
            settings.rollout,
            settings.rollout_split_percent,
            settings.rollout_min_samples,
            settings.rollback_window,
            settings.rollback_min_samples,
        )


def what(evidence: Evidence) -> str:
    if evidence.kind == EVIDENCE_TRUTH:
        return f"{len(evidence)} live photos a person corrected (the truth)"
    return f"{len(evidence)} live labels"


def decision_numbers(comparison: Comparison, version: int, baseline: int, kind: str) -> dict:
    """The numbers of a decision, the version on trial first, and what they were measured against."""
    return {
        "evidence": kind,
        "samples": comparison.candidate.samples,
        "version": version,
        "baseline_version": baseline,
        "version_score": comparison.candidate.score,
        "baseline_score": comparison.served.score,
        "gain": comparison.improvement,
        "confidence": comparison.confidence,  # share of resamples in which the version scored lower
    }
