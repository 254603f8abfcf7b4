"""`python -m bench.training --truth`: can the student end up closer to the truth than its teacher?

A synthetic world (bench/synthetic.py: class-prototype features with 8% of photos taken for a
look-alike dish, Zipf dish frequencies, a hidden portion of 0.8-1.2× that no feature reveals) where
the photos' values are the *truth* (a weighed plate), and the teacher (ChatGPT) sees each plate but
is off by a factor of 0.7-1.3× per dish and nutrient (systematic) and by 10% per photo (noise). A
person corrects a share of the labelled photos with the true values.

Each run takes the trainer's own path: trainer.data.run_data (the 70/30 split of corrections, the
teacher's bias learnt per dish), trainer.training.train with the original defaults, and
trainer.gate.decide against version 0 (the truth first where it is large enough). The version that
would be served (the candidate if the gate passed it, else version 0) is scored against the truth
on 3,000 fresh photos, beside the teacher's own labels of the same photos, what a student reading
these features could reach at best (the Bayes-optimal answer per top-1 dish, had every labelled photo
carried its truth) and the floor (each photo's true per-dish value: needs the true dish).

"Today's student" is the same run with no correction learnt from (the design before this change).
Printed as a table; saved to bench/results/training_truth.{json,txt,png}. Never a timed assertion.
"""

from __future__ import annotations

import numpy as np

from bench.harness import RESULTS, progress, save, say, table, verdict
from bench.synthetic import ClassFeatureWorld, reference_model
from model_store.worker.nutrition_model import NUTRIENTS
from trainer.data import Dataset
from trainer.gate import decide, predictions
from trainer.targets import run_data
from trainer.training import TrainingParameters, train

SHARES = (0.0, 0.01, 0.05, 0.10)
# (labelled photos, teacher biased, corrected share, worlds): the 500 photos in full; 5,000
# (where the student is near what the features allow) for the headline shares only: each run there
# takes ~30 s on this 2-core machine.
CONFIGS = [
    *((500, biased, share, (1, 2, 3)) for biased in (True, False) for share in SHARES),
    *((5000, biased, share, (1, 2)) for biased, share in ((True, 0.0), (True, 0.10), (False, 0.10))),
]
TEST_PHOTOS = 3000
BIAS_RANGE, PHOTO_NOISE = (0.7, 1.3), 0.10
TARGET_RATIO = 0.7  # served MAE against the truth at most 0.7× the teacher's, at 10% corrections


def _teacher(world_bias: np.ndarray, truth: np.ndarray, dishes: np.ndarray, rng) -> np.ndarray:
    noise = np.exp(rng.normal(0, PHOTO_NOISE, size=truth.shape))
    return (truth * world_bias[dishes] * noise).astype(np.float32)


def _mae(values: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.abs(values.astype(np.float64) - truth).mean(axis=0)


def one_run(labelled: int, biased: bool, share: float, seed: int, learn: bool = True) -> dict:
    world = ClassFeatureWorld(width=128, seed=seed)
    rng = np.random.default_rng([seed, 7])
    world_bias = rng.uniform(*BIAS_RANGE, size=(101, 4)) if biased else np.ones((101, 4))
    photos = world.photos(labelled, seed=seed, id_prefix="truth")
    truth = photos.data.targets
    teacher = _teacher(world_bias, truth, photos.true_dish, rng)
    corrected = rng.random(labelled) < share
    corrections = np.where(corrected[:, None] & learn, truth, np.nan).astype(np.float32)
    data = Dataset(
        photos.data.ids,
        photos.data.embeddings,
        photos.data.probabilities,
        teacher,
        photos.data.image_sha256,
        labels=teacher,
        corrections=corrections,
    )
    parts = run_data(data)
    reference = reference_model(world.width)
    params = TrainingParameters()  # the original defaults: 20 epochs, batch 8, lr 0.001
    best, _, _ = train(reference, parts.train, parts.early_stopping, params, lambda _: None)
    comparison = decide(best, reference, parts.validation, parts.truth)
    served = best if comparison.better else reference

    test = world.photos(TEST_PHOTOS, seed=seed + 1000, id_prefix="test")
    test_truth = test.data.targets.astype(np.float64)
    test_teacher = _teacher(world_bias, test.data.targets, test.true_dish, rng)
    # What a student reading these features could reach if every labelled photo carried its truth:
    # the Bayes-optimal estimate per top-1 dish with the world's own prior (bench/synthetic.py).
    oracle = world.oracle_dish_values(photos.data.probabilities.argmax(axis=1), truth)
    return {
        "reachable": _mae(oracle[test.data.probabilities.argmax(axis=1)], test_truth),
        "served": _mae(predictions(served, test.data), test_truth),
        "teacher": _mae(test_teacher, test_truth),
        "floor": _mae(test.floor_prediction, test_truth),
        "version0": _mae(predictions(reference, test.data), test_truth),
        "deployed": bool(comparison.better),
        "evidence": comparison.evidence,
        "corrections": int(corrected.sum()),
        "truth_photos": len(parts.truth),
    }


def measure() -> dict:
    rows = []
    for labelled, biased, share, seeds in CONFIGS:
        progress(f"{labelled} photos, {'biased' if biased else 'unbiased'} teacher, {share:.0%} corrected")
        runs = [one_run(labelled, biased, share, seed) for seed in seeds]
        today = [one_run(labelled, biased, share, seed, learn=False) for seed in seeds] if share else runs
        row = {
            "labelled": labelled,
            "teacher_biased": biased,
            "share": share,
            "worlds": len(seeds),
            "corrections": float(np.mean([r["corrections"] for r in runs])),
            "truth_photos": float(np.mean([r["truth_photos"] for r in runs])),
            "deployed": sum(r["deployed"] for r in runs),
            "evidence": sorted({r["evidence"] for r in runs}),
        }
        for key in ("served", "teacher", "floor", "reachable", "version0"):
            row[key] = dict(zip(NUTRIENTS, np.mean([r[key] for r in runs], axis=0).tolist(), strict=True))
        row["today"] = dict(
            zip(NUTRIENTS, np.mean([r["served"] for r in today], axis=0).tolist(), strict=True)
        )
        rows.append(row)
    return {
        "world": {
            "test_photos": TEST_PHOTOS,
            "teacher_bias_per_dish_and_nutrient": list(BIAS_RANGE),
            "teacher_noise_per_photo": PHOTO_NOISE,
            "hidden_portion": list(ClassFeatureWorld.portion),
            "misclassified": ClassFeatureWorld.misclassified,
        },
        "rows": rows,
    }


def lines(result: dict) -> list[str]:
    world = result["world"]
    body = []
    for row in result["rows"]:
        kcal = {
            key: row[key]["calories_kcal"] for key in ("served", "today", "teacher", "floor", "reachable")
        }
        body.append(
            [
                row["labelled"],
                "biased" if row["teacher_biased"] else "unbiased",
                f"{row['share']:.0%} ({row['corrections']:.0f})",
                f"{kcal['served']:.1f}",
                f"{kcal['today']:.1f}",
                f"{kcal['teacher']:.1f}",
                f"{kcal['reachable']:.1f}",
                f"{kcal['floor']:.1f}",
                f"{kcal['served'] / kcal['teacher']:.2f}",
                f"{kcal['reachable'] / kcal['teacher']:.2f}",
                f"{row['deployed']}/{row['worlds']} on {'+'.join(row['evidence'])}",
            ]
        )
    headlines = [r for r in result["rows"] if r["teacher_biased"] and r["share"] == max(SHARES)]

    def ratio(row: dict, key: str) -> float:
        return row[key]["calories_kcal"] / row["teacher"]["calories_kcal"]

    verdicts = [
        f"target: served ≤ {TARGET_RATIO}× the teacher's MAE at {max(SHARES):.0%} corrections, "
        f"{r['labelled']} photos: {ratio(r, 'served'):.2f}× — {verdict(ratio(r, 'served') <= TARGET_RATIO)} "
        f"(reachable with these features: {ratio(r, 'reachable'):.2f}×)"
        for r in headlines
    ]
    unbiased = [r for r in result["rows"] if not r["teacher_biased"] and r["share"]]
    worst = max(r["served"]["calories_kcal"] / r["today"]["calories_kcal"] for r in unbiased)
    return [
        f"truth: teacher off {world['teacher_bias_per_dish_and_nutrient']}× per dish and nutrient and "
        f"{world['teacher_noise_per_photo']:.0%} per photo; hidden portion {world['hidden_portion']}; "
        f"{world['misclassified']:.0%} of photos taken for a look-alike dish; calorie MAE against the "
        f"truth on {world['test_photos']} fresh photos, mean over worlds",
        table(
            [
                "labelled",
                "teacher",
                "corrected",
                "served",
                "today's student",
                "teacher",
                "reachable",
                "floor",
                "served/teacher",
                "reachable/teacher",
                "deployed",
            ],
            body,
        ),
        "reachable: the Bayes-optimal answer per top-1 dish had every labelled photo carried its truth;",
        "floor: each photo's true per-dish value (needs the true dish; the features do not always show it)",
        *verdicts,
        f"target: no worse than today's student with an unbiased teacher: worst {worst:.3f}× "
        f"— {verdict(worst <= 1.02)} (within 2%)",
    ]


def chart(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, biased in zip(axes, (True, False), strict=True):
        rows = [r for r in result["rows"] if r["teacher_biased"] == biased and r["labelled"] == 500]
        shares = [100 * r["share"] for r in rows]
        for key, style in (
            ("served", "o-"),
            ("today", "s--"),
            ("teacher", "k:"),
            ("reachable", "c-."),
            ("floor", "g-."),
        ):
            values = [r[key]["calories_kcal"] for r in rows]
            axis.plot(shares, values, style, label={"today": "today's student"}.get(key, key))
        axis.set(
            title=f"500 labelled photos, {'biased' if biased else 'unbiased'} teacher",
            xlabel="labelled photos a person corrected (%)",
            ylabel="calorie MAE against the truth",
        )
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main() -> None:
    result = measure()
    text = "\n".join(lines(result))
    say(text)
    json_path, png_path = save("training_truth", result, text)
    chart(result, png_path)
    say(f"\nsaved {json_path} and {png_path.relative_to(RESULTS.parent.parent)}")
