"""A synthetic classifier as sure of itself as a fine-tuned one, for the guard's tests and the
precision/runtime benchmarks (besides the demo).

A random ViT's class probabilities are near-uniform (top-1 ~0.01-0.02), so any quantisation looks
harmless on it. A fine-tuned Food-101 model puts most of the probability on one dish, and a small
move of its features moves that probability. How the head is made confident:

1. random backbone weights (seeded), saved with `save_pretrained` like any checkpoint;
2. its fp32 embeddings (what the classification layer reads) of `FIT_PHOTOS` photo-like pictures
   (`sample_photos.photo_like`: never the guard's photos), centred;
3. the head reads the top `COMPONENTS` principal directions of those embeddings, each scaled to
   unit variance (where the photos differ, as a trained head reads discriminative features), times a
   seeded random class matrix; the bias removes the mean embedding;
4. one scale on the whole layer, found by bisection, so that the median top-1 probability on the fit
   photos is `TOP1`: on the guard's photos the top-1 is then typically > 0.8 as well (tested).
"""

from __future__ import annotations

from pathlib import Path

import torch

from model_store.sample_photos import photo_like
from model_store.worker.food101_model import Food101Classifier
from model_store.worker.photos import decode_for_model

FIT_PHOTOS, COMPONENTS, TOP1 = 48, 24, 0.9


def embeddings(classifier: Food101Classifier, photos: list[bytes], batch: int = 8):
    """fp32 (embedding, probabilities) of `photos`, in batches."""
    rows = [
        classifier(
            classifier.pixels(
                [decode_for_model(p, classifier.input_short_side) for p in photos[i : i + batch]]
            )
        )
        for i in range(0, len(photos), batch)
    ]
    return torch.cat([e for e, _ in rows]), torch.cat([p for _, p in rows])


def _scale_for(logits: torch.Tensor, top1: float) -> float:
    low, high = 0.0, 1e4
    for _ in range(60):  # the median top-1 grows with the scale
        middle = (low + high) / 2
        median = torch.softmax(logits * middle, -1).max(-1).values.median()
        low, high = (middle, high) if median < top1 else (low, middle)
    return (low + high) / 2


def make_confident(checkpoint_dir: Path, top1: float = TOP1, seed: int = 0) -> None:
    """Refit the classification layer of the saved checkpoint in place (see the module doc)."""
    classifier = Food101Classifier(checkpoint_dir)
    [head] = classifier.heads  # a single-head family (ViT): DeiT's two heads would need a split
    embedding, _ = embeddings(classifier, photo_like(FIT_PHOTOS))
    mean = embedding.mean(0)
    _, spread, directions = torch.linalg.svd(embedding - mean, full_matrices=False)
    k = min(COMPONENTS, len(embedding) - 1)
    reads = directions[:k] / (spread[:k, None] / (len(embedding) - 1) ** 0.5)  # unit variance each
    classes = torch.randn(head.out_features, k, generator=torch.Generator().manual_seed(seed)) / k**0.5
    weight = classes @ reads
    bias = -weight @ mean
    scale = _scale_for((embedding @ weight.T) + bias, top1)
    with torch.no_grad():
        head.weight.copy_(weight * scale)
        head.bias.copy_(bias * scale)
    classifier.model.save_pretrained(checkpoint_dir)
