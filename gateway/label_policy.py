"""When to ask ChatGPT: always (the original design), or only where the answer teaches something.

`uncertain` asks when any of these holds, in this order, and records the first reason:
- a note: the person wrote something the photo cannot show ("two slices", "no cheese"); only
  ChatGPT reads it, and it can change the answer, so such a photo is always labelled;
- the classifier is unsure: top-1 probability below a threshold (a dish not in Food-101 at all
  spreads its probabilities);
- the dish has few labels yet;
- the calibrated calories range is wider than a threshold (relative half-width);
- exploration: a random share of the photos no rule asked for, so calibration and quality
  measurements keep seeing what the policy skips (each such photo is weighed by 1/share).
Otherwise our number is shown and no call is made. Pure: the gateway and bench/label_policy.py
run exactly this code.
"""

from __future__ import annotations

from dataclasses import dataclass

from foodcal.domain.calibration import exploration_reason

ALWAYS, UNCERTAIN = "always", "uncertain"
CONFIDENT_REASON = "confident"  # how a skipped photo's reason starts (GetStats counts them)


@dataclass(frozen=True)
class PolicySettings:
    policy: str = ALWAYS
    exploration: float = 0.05
    min_confidence: float = 0.6
    min_dish_labels: int = 10
    max_relative_width: float = 0.25

    @classmethod
    def from_settings(cls, settings) -> PolicySettings:
        return cls(
            policy=settings.label_policy,
            exploration=settings.label_policy_exploration,
            min_confidence=settings.label_policy_min_confidence,
            min_dish_labels=settings.label_policy_min_dish_labels,
            max_relative_width=settings.label_policy_max_relative_width,
        )


@dataclass(frozen=True)
class Decision:
    ask: bool
    reason: str
    uncertainty: float  # higher = more to learn; orders labels that wait for the budget
    propensity: float = 1.0  # the chance this photo had to be labelled: 1 when a rule asked


def decide(
    settings: PolicySettings,
    *,
    top1_probability: float,
    dish_labels: int,
    relative_width: float,  # the calories range's half-width / the prediction
    explore_draw: float,  # uniform in [0, 1): the caller's random number
    has_note: bool = False,  # the person sent a note with the photo
) -> Decision:
    uncertainty = max(relative_width, 1.0 - top1_probability) + (
        1.0 if dish_labels < settings.min_dish_labels else 0.0
    )
    if settings.policy == ALWAYS:
        return Decision(True, "policy always", uncertainty)
    if has_note:
        return Decision(True, "note: only ChatGPT reads it, and it can change the answer", uncertainty)
    if top1_probability < settings.min_confidence:
        return Decision(
            True,
            f"classifier unsure: top-1 {top1_probability:.2f} < {settings.min_confidence:.2f}",
            uncertainty,
        )
    if dish_labels < settings.min_dish_labels:
        return Decision(True, f"dish has {dish_labels} labels < {settings.min_dish_labels}", uncertainty)
    if relative_width > settings.max_relative_width:
        return Decision(
            True,
            f"calories range ±{relative_width:.0%} wider than ±{settings.max_relative_width:.0%}",
            uncertainty,
        )
    if explore_draw < settings.exploration:  # only photos no rule asks for: see `propensity`
        return Decision(
            True,
            exploration_reason(settings.exploration),
            uncertainty,
            settings.exploration,
        )
    return Decision(
        False,
        f"{CONFIDENT_REASON}: top-1 {top1_probability:.2f}, {dish_labels} labels, "
        f"calories ±{relative_width:.0%}",
        uncertainty,
    )
