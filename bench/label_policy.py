"""`python -m bench.label_policy`: how many ChatGPT calls the `uncertain` policy saves, at what cost.

A stream of photos (features that carry class information, labels = per-dish value x portion,
bench/synthetic.py) plus out-of-distribution photos (no Food-101 dish: flat probabilities, labels
from real Nutrition5k plates) is replayed in order through the real policy code
(gateway/label_policy.py) and the real calibration (foodcal/domain/calibration.py). As in the original
design, the student is retrained every RETRAIN_EVERY new labels with the real trainer and deployed
only through the real gate, then recalibrated on its run's held-out split. For `always` and
`uncertain`: ChatGPT calls, the final student's held-out MAE, and the ranges' coverage.

Printed as ratios; saved to bench/results/label_policy.{json,txt}. Never a timed assertion.
"""

from __future__ import annotations

import re
import sys

import numpy as np
import torch

from bench.harness import machine, machine_lines, progress, save, say, table, verdict
from bench.synthetic import CLASSES, ClassFeatureWorld, real_dishes, reference_model
from foodcal.domain import calibration
from gateway.label_policy import ALWAYS, UNCERTAIN, PolicySettings, decide
from model_store.worker.nutrition_model import NUTRIENTS
from trainer.data import Dataset
from trainer.gate import compare
from trainer.training import TrainingParameters, train

STREAM, TEST, OOD_SHARE = 4000, 2000, 0.05
RETRAIN_EVERY, MIN_SAMPLES = 200, 50
WIDTH = 768
TARGET_FEWER_CALLS, TARGET_MAE_INCREASE, TARGET_COVERAGE_POINTS = 0.60, 0.10, 0.05
# `python -m bench.label_policy min_dish_labels=20 ...`: other policy settings than the defaults.
ARGUMENTS = dict(argument.split("=", 1) for argument in sys.argv[1:])
WEIGHTED = ARGUMENTS.pop("weighted", "1") == "1"  # weighted=0: the unweighted calibration, to compare
OVERRIDES = {key: type(getattr(PolicySettings(), key))(value) for key, value in ARGUMENTS.items()}


def with_out_of_distribution(
    world: ClassFeatureWorld, data: Dataset, seed: int
) -> tuple[Dataset, np.ndarray]:
    """Replace a share of photos by plates that are no Food-101 dish: an embedding near no
    prototype, flat probabilities, a real Nutrition5k plate as the label."""
    rng = np.random.default_rng(seed)
    ood = rng.random(len(data)) < OOD_SHARE
    count = int(ood.sum())
    embeddings = rng.normal(size=(count, world.width)).astype(np.float32) * 1.4
    logits = embeddings @ world.prototypes.T / world.width * world.temperature
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    dishes = real_dishes()
    data.embeddings[ood] = embeddings
    data.probabilities[ood] = probabilities.astype(np.float32)
    data.targets[ood] = dishes[rng.integers(0, len(dishes), size=count)]
    return data, ood


def predict(model, data: Dataset, rows=slice(None)) -> np.ndarray:
    with torch.inference_mode():
        return model(
            torch.from_numpy(data.embeddings[rows]), torch.from_numpy(data.probabilities[rows])
        ).numpy()


def replay(policy: str, stream: Dataset, test: Dataset) -> dict:
    settings = PolicySettings(policy=policy, **OVERRIDES)
    rng = np.random.default_rng(7)  # the same exploration draws for every policy
    served = reference_model(WIDTH)
    calibrated = calibration.Calibration()
    label_counts = np.zeros(CLASSES, dtype=np.int64)  # labels asked so far, by top-1 dish
    labelled: list[int] = []
    weights = np.ones(len(stream))  # 1 / labelling propensity, for weighted calibration
    reasons: dict[str, int] = {}
    since_training, deployed = 0, 0
    params = TrainingParameters()  # the original defaults
    for index in range(len(stream)):
        probabilities = stream.probabilities[index]
        prediction = predict(served, stream, slice(index, index + 1))[0]
        low, high, _ = calibrated.ranges(prediction, probabilities)
        relative_width = (high[0] - low[0]) / 2 / max(prediction[0], calibrated.denominators[0])
        top1 = int(probabilities.argmax())
        decision = decide(
            settings,
            top1_probability=float(probabilities[top1]),
            dish_labels=int(label_counts[top1]),
            relative_width=float(relative_width),
            explore_draw=float(rng.random()),
        )
        reason = re.split(r"[:(±0-9]", decision.reason)[0].strip()  # the kind, without its numbers
        reasons[reason] = reasons.get(reason, 0) + 1
        if not decision.ask:
            continue
        labelled.append(index)
        weights[index] = 1.0 / decision.propensity
        label_counts[top1] += 1
        since_training += 1
        if since_training >= RETRAIN_EVERY and len(labelled) >= MIN_SAMPLES:
            since_training = 0
            data = stream.subset(np.isin(np.arange(len(stream)), labelled))
            train_data, early_stopping, validation, _ = data.split()
            best, _, _ = train(served, train_data, early_stopping, params, lambda _: None)
            if compare(best, served, validation).better:
                served, deployed = best, deployed + 1
            counts = np.bincount(data.probabilities.argmax(axis=1), minlength=CLASSES)  # as runs.py
            held_out_weights = weights[np.isin(stream.ids, validation.ids)] if WEIGHTED else None
            calibrated = calibration.fit(
                predict(served, validation), validation.targets, validation.probabilities, counts,
                weights=held_out_weights,
            )  # fmt: skip
    predictions = predict(served, test)
    mae = np.abs(predictions - test.targets).mean(axis=0)
    covered = calibration.coverage(calibrated, predictions, test.targets, test.probabilities)
    return {
        "policy": policy,
        "calls": len(labelled),
        "photos": len(stream),
        "deployed_versions": deployed,
        "reasons": reasons,
        "mae": dict(zip(NUTRIENTS, mae.tolist(), strict=True)),
        "coverage": dict(zip(NUTRIENTS, covered.tolist(), strict=True)),
        "calibration_samples": calibrated.samples,
        "level": calibrated.level,
    }


def main() -> None:
    info = machine()
    world = ClassFeatureWorld(width=WIDTH)
    stream, ood_stream = with_out_of_distribution(world, world.photos(STREAM, seed=5, id_prefix="s").data, 1)
    test, _ = with_out_of_distribution(world, world.photos(TEST, seed=6, id_prefix="t").data, 2)
    runs = {}
    for policy in (ALWAYS, UNCERTAIN):
        progress(f"replaying {STREAM} photos ({ood_stream.mean():.0%} not Food-101), LABEL_POLICY={policy}")
        runs[policy] = replay(policy, stream, test)
    always, uncertain = runs[ALWAYS], runs[UNCERTAIN]
    fewer = 1 - uncertain["calls"] / always["calls"]
    mae_increase = uncertain["mae"]["calories_kcal"] / always["mae"]["calories_kcal"] - 1
    worst_coverage_gap = max(
        abs(run["coverage"][n] - run["level"]) for run in runs.values() for n in NUTRIENTS
    )
    targets = {
        "fewer_calls_ge_60pct": fewer >= TARGET_FEWER_CALLS,
        "mae_increase_le_10pct": mae_increase <= TARGET_MAE_INCREASE,
        "coverage_within_5_points": worst_coverage_gap <= TARGET_COVERAGE_POINTS,
    }
    rows = [
        [
            run["policy"],
            f"{run['calls']} of {run['photos']}",
            str(run["deployed_versions"]),
            *(f"{run['mae'][n]:.1f}" for n in NUTRIENTS),
            " / ".join(f"{run['coverage'][n]:.0%}" for n in NUTRIENTS),
        ]
        for run in runs.values()
    ]
    lines = [
        "bench.label_policy — ChatGPT calls saved by LABEL_POLICY=uncertain, and what it costs"
        + (f" ({', '.join(f'{k}={v}' for k, v in OVERRIDES.items())})" if OVERRIDES else ""),
        *machine_lines(info),
        f"stream: {STREAM} photos in order, {ood_stream.mean():.1%} not a Food-101 dish; retrain every "
        f"{RETRAIN_EVERY} new labels (original defaults), deploy through the gate; test: {TEST} photos",
        "",
        table(
            [
                "policy",
                "ChatGPT calls",
                "versions deployed",
                *(f"MAE {n}" for n in NUTRIENTS),
                f"coverage at {always['level']:.0%} (per nutrient)",
            ],
            rows,
        ),
        "",
        "why `uncertain` asked (first reason): "
        + ", ".join(f"{reason} {count}" for reason, count in sorted(uncertain["reasons"].items())),
        "",
        table(
            ["target", "measured", "verdict"],
            [
                [
                    f"≥ {TARGET_FEWER_CALLS:.0%} fewer calls",
                    f"{fewer:.0%}",
                    verdict(targets["fewer_calls_ge_60pct"]),
                ],
                [
                    f"≤ {TARGET_MAE_INCREASE:.0%} higher held-out calories MAE",
                    f"{mae_increase:+.1%}",
                    verdict(targets["mae_increase_le_10pct"]),
                ],
                [
                    f"coverage within ±{TARGET_COVERAGE_POINTS * 100:.0f} points of the level",
                    f"worst {worst_coverage_gap * 100:.1f} points",
                    verdict(targets["coverage_within_5_points"]),
                ],
            ],
        ),
    ]
    text = "\n".join(lines)
    say(text)
    name = (
        "label_policy"
        + "".join(f"-{k}={v}" for k, v in OVERRIDES.items())
        + ("" if WEIGHTED else "-unweighted")
    )
    json_path, _ = save(
        name, {"machine": info, "overrides": OVERRIDES, "runs": runs, "targets": targets}, text
    )
    say(f"\nsaved {json_path}")


if __name__ == "__main__":
    main()
