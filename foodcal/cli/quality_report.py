"""The quality ledger for people: a text table per version, and a PNG chart (matplotlib).

Reads a GetQualityReportResponse (trainer/quality.py computes it); imports matplotlib only to draw.
"""

from __future__ import annotations

from pathlib import Path

from foodcal.domain.nutrition import NUTRIENTS
from foodcal.v1 import gateway_pb2, trainer_pb2

SHORT = {"calories_kcal": "kcal", "proteins_g": "prot g", "fats_g": "fats g", "carbs_g": "carbs g"}
SCORES = (
    ("test_chatgpt", "test vs ChatGPT"),
    ("test_corrections", "vs truth"),
    ("live", "live vs ChatGPT"),
)


def _errors(errors: trainer_pb2.QualityErrors, interval: bool = False) -> str:
    """One line; `interval`: each MAE with its 95% interval and its share of the mean truth."""
    if errors.samples == 0:
        return "n=0"
    if interval:
        mae = " ".join(
            f"{SHORT[n]} {getattr(errors.mae, n):.1f} [{getattr(errors.mae_low, n):.1f}, "
            f"{getattr(errors.mae_high, n):.1f}] {getattr(errors.relative_error, n):.0%}"
            for n in NUTRIENTS
        )
    else:
        mae = " ".join(f"{SHORT[n]} {getattr(errors.mae, n):.1f}" for n in NUTRIENTS)
    bias = " ".join(f"{getattr(errors.bias, n):+.1f}" for n in NUTRIENTS)
    return f"n={errors.samples:<5} score {errors.score:.4f}  MAE {mae}  bias {bias}"


def _worst(score: trainer_pb2.QualityScore, title: str) -> list[str]:
    if not score.worst_dishes:
        return []
    dishes = ", ".join(f"{d.dish} {d.errors.score:.3f} (n={d.errors.samples})" for d in score.worst_dishes)
    return [f"  worst dishes, {title}: {dishes}"]


def text(report: gateway_pb2.GatewayServiceGetQualityReportResponse) -> str:
    lines = [
        f"test set: {report.test_percent}% of photos (by image hash), against ChatGPT's labels; "
        "never trained on",
        f"truth set: people's corrections of photos in {report.truth_percent}% of hash buckets, never "
        "trained on (the other corrections are learnt from); MAE [95% interval] and MAE / mean truth",
        f"score: {report.primary_score}; bias = mean(ours - truth); "
        f"dishes need {report.min_dish_samples}+ samples",
    ]
    if report.truth_note:
        lines.append(f"truth: {report.truth_note}")
    else:
        teacher = report.chatgpt_vs_corrections
        lines += ["", f"ChatGPT vs truth  {_errors(teacher.overall, interval=True)}"]
        lines += _worst(teacher, "ChatGPT vs truth")
    for version in report.versions:
        made = version.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M UTC")
        served = f"  ({version.live_role})" if version.live_role else ""
        lines += ["", f"v{version.version}{served}  made {made}  {version.description}"]
        if version.unscored_reason:
            lines.append(f"  test set not scored: {version.unscored_reason}")
        for name, title in SCORES:
            truth = name == "test_corrections"
            lines.append(f"  {title:<20} {_errors(getattr(version, name).overall, interval=truth)}")
        if version.HasField("test_chatgpt_at_creation"):
            lines.append(f"  {'test when made':<20} {_errors(version.test_chatgpt_at_creation)}")
        for name, title in SCORES:
            lines += _worst(getattr(version, name), title)
        lines += [f"  {_decision(decision)}" for decision in version.decisions]
    return "\n".join(lines)


def _decision(decision: trainer_pb2.RolloutDecision) -> str:
    at = decision.at.ToDatetime().strftime("%Y-%m-%d %H:%M UTC")
    numbers = ""
    if decision.samples:
        against = {"truth": "corrections", "chatgpt": "ChatGPT labels"}.get(decision.evidence, "labels")
        numbers = (
            f" [n={decision.samples} {against}, score {decision.version_score:.4f} "
            f"vs v{decision.baseline_version} {decision.baseline_score:.4f}, "
            f"lower in {decision.confidence:.0%} of resamples]"
        )
    return f"{at} {decision.decision.replace('_', ' ')}: {decision.reason}{numbers}"


def chart(report: gateway_pb2.GatewayServiceGetQualityReportResponse, path: Path) -> Path:
    """MAE by version per nutrient (test set and live), and the served version's worst dishes."""
    import matplotlib

    matplotlib.use("Agg")  # no screen: render to a file
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(14, 8))
    numbers = [v.version for v in report.versions]
    for axis, nutrient in zip(axes.flat[:4], NUTRIENTS, strict=False):
        for name, title in SCORES:
            points = [
                (v.version, getattr(getattr(v, name).overall.mae, nutrient))
                for v in report.versions
                if getattr(v, name).overall.samples
            ]
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", label=title)
        teacher = report.chatgpt_vs_corrections.overall
        if teacher.samples:  # the bar a student has to clear
            axis.axhline(
                getattr(teacher.mae, nutrient), color="grey", linestyle="--", label="ChatGPT vs truth"
            )
        axis.set(title=f"{SHORT[nutrient]}: MAE by version", xlabel="version", ylabel="MAE")
        axis.set_xticks(numbers)
        axis.legend(fontsize=7)
    served = next((v for v in report.versions if v.version == report.served_version), None)
    bars = axes.flat[4]
    worst = list(served.test_chatgpt.worst_dishes) if served else []
    if worst:
        bars.barh(
            [f"{d.dish} (n={d.errors.samples})" for d in worst][::-1], [d.errors.score for d in worst][::-1]
        )
    bars.set(
        title=f"served v{report.served_version}: worst dishes (test set)", xlabel="score (lower is better)"
    )
    axes.flat[5].axis("off")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
