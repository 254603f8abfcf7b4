"""`python -m bench.angles`: how to pool several photos of one plate (model_store/handlers).

Photos from bench/synthetic.py's world (class-prototype embeddings, a linear classification layer,
Zipf dish frequencies), where a plate is taken for a look-alike dish in two ways: the dish itself
looks like its neighbour (4% of plates: every angle is fooled alike) or one angle hides it (4% of
photos, independently per angle). Top-1 accuracy on 6,000 plates for 1 to 4 angles, pooled by the
mean of probabilities, the mean of log-probabilities (what the handler does) and the mean of the
embeddings (the same as the mean log-probability for a linear classification layer).
Saved to bench/results/angles.{json,txt}. Seconds; never a timed assertion.
"""

from __future__ import annotations

import numpy as np

from bench.harness import save, say, table
from bench.synthetic import CLASSES, ClassFeatureWorld

PLATES, ANGLES, PLATE_FOOLED, ANGLE_FOOLED = 6000, 4, 0.04, 0.04


def measure(seed: int = 0) -> dict:
    world = ClassFeatureWorld(width=128, seed=3)
    rng = np.random.default_rng(seed)
    true = rng.choice(CLASSES, size=PLATES, p=world.dish_frequency)

    def probabilities(embeddings: np.ndarray) -> np.ndarray:
        logits = embeddings @ world.prototypes.T / world.width * world.temperature
        logits -= logits.max(axis=1, keepdims=True)
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    def look(fooled: np.ndarray) -> np.ndarray:
        other = world.neighbours[true, rng.integers(0, world.confusable, size=PLATES)]
        mix = np.where(fooled, rng.uniform(0.6, 0.8, size=PLATES), 1.0)[:, None]
        return mix * world.prototypes[np.where(fooled, other, true)] + (1 - mix) * world.prototypes[true]

    plate = look(rng.random(PLATES) < PLATE_FOOLED)
    angles = []
    for _ in range(ANGLES):
        fooled = rng.random(PLATES) < ANGLE_FOOLED
        view = np.where(fooled[:, None], look(fooled), plate)
        angles.append(view + rng.normal(size=plate.shape) * world.embedding_noise)
    each = [probabilities(angle) for angle in angles]
    rows = []
    for count in range(1, ANGLES + 1):
        mean_probability = np.mean(each[:count], axis=0)
        mean_log = np.mean([np.log(np.maximum(p, 1e-12)) for p in each[:count]], axis=0)
        mean_embedding = probabilities(np.mean(angles[:count], axis=0))
        rows.append(
            {
                "angles": count,
                **{
                    name: float((pooled.argmax(axis=1) == true).mean())
                    for name, pooled in (
                        ("mean_probability", mean_probability),
                        ("mean_log_probability", mean_log),
                        ("mean_embedding", mean_embedding),
                    )
                },
            }
        )
    return {"plates": PLATES, "plate_fooled": PLATE_FOOLED, "angle_fooled": ANGLE_FOOLED, "rows": rows}


def main() -> None:
    result = measure()
    text = "\n".join(
        [
            f"top-1 accuracy on {result['plates']} plates ({PLATE_FOOLED:.0%} of dishes look like a "
            f"neighbour from every angle, {ANGLE_FOOLED:.0%} of angles fooled on their own)",
            table(
                [
                    "angles",
                    "mean of probabilities",
                    "mean of log-probabilities (served)",
                    "mean of embeddings",
                ],
                [
                    [
                        r["angles"],
                        f"{r['mean_probability']:.1%}",
                        f"{r['mean_log_probability']:.1%}",
                        f"{r['mean_embedding']:.1%}",
                    ]
                    for r in result["rows"]
                ],
            ),
        ]
    )
    say(text)
    save("angles", result, text)


if __name__ == "__main__":
    main()
