"""Synthetic classifier features and ChatGPT-like labels for training benchmarks and tests.

`class_feature_world` imitates what a real Food-101 classifier hands the nutrition head: each
photo's embedding is its *perceived* dish's prototype plus noise, the class probabilities come from
a linear classifier on that embedding, and a share of photos (default 8%) is perceived as another
dish. Labels depend on the *true* dish (a per-dish value: the reference serving times a per-dish
factor, i.e. ChatGPT's own view of that dish) and on a hidden portion factor, which no photo feature
reveals. So the best any student can do is the per-dish value: that error is the floor.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model_store.reference import food101_labels, lookup
from model_store.worker.nutrition_model import NutritionModel
from trainer.data import Dataset

NUTRITION5K = Path(__file__).resolve().parents[2] / "shared" / "data" / "nutrition5k"
CLASSES = 101


def reference_table() -> np.ndarray:
    """[101, 4] the reference serving of each dish, in Food-101 label order."""
    return np.asarray([lookup(label).nutrients for label in food101_labels()], dtype=np.float32)


def reference_model(width: int) -> NutritionModel:
    return NutritionModel.from_table(torch.from_numpy(reference_table()), embedding_dim=width)


def real_dishes() -> np.ndarray:
    """[n, 4] = calories, proteins, fats, carbs of every real Nutrition5k dish with calories and mass > 0."""
    rows = []
    for name in ("dish_metadata_cafe1.csv", "dish_metadata_cafe2.csv"):
        with (NUTRITION5K / name).open(newline="") as handle:
            for row in csv.reader(handle):
                try:
                    calories, mass, fat, carb, protein = (float(v) for v in row[1:6])
                except (ValueError, IndexError):
                    continue
                if calories > 0 and mass > 0:
                    rows.append((calories, protein, fat, carb))
    return np.asarray(rows, dtype=np.float32)


def unstructured_dataset(count: int, width: int, dishes: np.ndarray, seed: int = 0) -> Dataset:
    """Random features and real dishes as targets: no signal, for timing (and the noise gate)."""
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(count, width)).astype(np.float32)
    logits = rng.normal(size=(count, CLASSES)) * 2
    probabilities = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    targets = dishes[rng.integers(0, len(dishes), size=count)]
    ids = [f"bench-{seed}-{i:05d}" for i in range(count)]
    return Dataset(ids, embeddings, probabilities, targets, ids)


@dataclass
class LabelledPhotos:
    data: Dataset
    true_dish: np.ndarray  # [n] the dish on the plate
    perceived_dish: np.ndarray  # [n] the dish the features point at (differs for misclassified photos)
    floor_prediction: np.ndarray  # [n, 4] the per-dish value of the true dish: the best possible answer


@dataclass
class ClassFeatureWorld:
    """One classifier and one labeller; draw as many photos from it as needed."""

    width: int = 768
    misclassified: float = 0.08
    portion: tuple[float, float] = (0.8, 1.2)
    dish_factor_sigma: float = 0.25  # how far ChatGPT's per-dish value is from the table's serving
    dish_factor_mean: float = 0.15  # ChatGPT's portions are larger on average (log scale: +16%)
    popularity: float = 1.0  # dishes are eaten with Zipf frequencies (rank^-popularity); 0 = uniform
    confusable: int = 5  # a misclassified photo is taken for one of the dish's nearest dishes
    embedding_noise: float = 1.0  # per dimension; prototypes have unit variance per dimension
    temperature: float = 8.0  # sharpness of the classifier's probabilities
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.prototypes = rng.normal(size=(CLASSES, self.width)).astype(np.float32)
        factors = np.exp(rng.normal(self.dish_factor_mean, self.dish_factor_sigma, size=(CLASSES, 4)))
        table = reference_table()
        self.dish_values = (table * factors).astype(np.float32)
        # Real confusions are between dishes that look alike (steak / filet mignon, pho / ramen), and
        # those tend to be alike on the plate too: the nearest dishes by their reference serving.
        profile = table / table.std(axis=0)
        distance = np.linalg.norm(profile[:, None] - profile[None], axis=-1)
        np.fill_diagonal(distance, np.inf)
        self.neighbours = np.argsort(distance, axis=1)[:, : self.confusable]
        frequency = 1.0 / np.arange(1, CLASSES + 1) ** self.popularity
        self.dish_frequency = frequency[rng.permutation(CLASSES)] / frequency.sum()

    def oracle_dish_values(self, perceived: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """[101, 4] the Bayes-optimal linear estimate of each dish's value from labelled photos,
        grouped by the dish they are taken for, with this world's true prior and portion spread:
        what no trainer knows, so an upper bound on what `targets` allow."""
        mean_factor = np.exp(self.dish_factor_mean + self.dish_factor_sigma**2 / 2)
        factor_spread = mean_factor * np.sqrt(np.exp(self.dish_factor_sigma**2) - 1)
        portion_spread = (self.portion[1] - self.portion[0]) / np.sqrt(12)
        prior = reference_table() * mean_factor
        shrink = (portion_spread * mean_factor / factor_spread) ** 2  # noise / prior variance
        estimate = prior.copy()
        for dish in range(CLASSES):
            values = targets[perceived == dish]
            if len(values):
                estimate[dish] += len(values) / (len(values) + shrink) * (values.mean(axis=0) - prior[dish])
        return estimate

    def photos(self, count: int, seed: int, id_prefix: str = "photo") -> LabelledPhotos:
        rng = np.random.default_rng([self.seed, seed])
        true_dish = rng.choice(CLASSES, size=count, p=self.dish_frequency)
        wrong = rng.random(count) < self.misclassified
        other = self.neighbours[true_dish, rng.integers(0, self.confusable, size=count)]
        perceived = np.where(wrong, other, true_dish)
        # An ambiguous photo: mostly the dish it is taken for, partly the one it is.
        mix = np.where(wrong, rng.uniform(0.6, 0.8, size=count), 1.0)[:, None]
        noise = rng.normal(size=(count, self.width)) * self.embedding_noise
        embeddings = mix * self.prototypes[perceived] + (1 - mix) * self.prototypes[true_dish] + noise
        embeddings = embeddings.astype(np.float32)
        # A linear classifier on the embedding, as in a real checkpoint's head.
        logits = embeddings @ self.prototypes.T / self.width * self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        portions = rng.uniform(*self.portion, size=(count, 1))
        targets = (self.dish_values[true_dish] * portions).astype(np.float32)
        ids = [f"{id_prefix}-{seed}-{i:05d}" for i in range(count)]
        data = Dataset(ids, embeddings, probabilities.astype(np.float32), targets, ids)
        return LabelledPhotos(data, true_dish, perceived, self.dish_values[true_dish])
