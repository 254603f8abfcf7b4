"""Any transformers image classifier with the 101 Food-101 labels, as foodcal uses it.

Shipped into food101.mar as an extra file (it imports only torch, transformers and Pillow), and used
by `make models` to describe a checkpoint before it is archived, so both see the same thing.

- Pixels come from the checkpoint's own image processor (`AutoImageProcessor`, Pillow backend:
  resize, crop, rescale, normalise, channel order exactly as the checkpoint was trained with).
- Probabilities are the softmax of the checkpoint's own logits (its full forward pass).
- The embedding is what the checkpoint's classification layer reads: the input of every final
  `Linear` with one output per label, captured by a hook. That works for every family (ViT's CLS
  token, a CNN's pooled features, DeiT's two heads concatenated) without a config key that only
  some families have.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torch import nn
from transformers import AutoImageProcessor, AutoModelForImageClassification


class NotAClassifier(ValueError):
    """The checkpoint has no layer that maps features to one output per label."""


def classification_layers(model: nn.Module, num_labels: int) -> list[nn.Linear]:
    layers = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_labels]
    if not layers:
        raise NotAClassifier(
            f"{type(model).__name__} has no Linear layer with {num_labels} outputs to take the embedding from"
        )
    return layers


def open_photo(data: bytes) -> Image.Image:
    """Decoded, turned upright by its EXIF orientation, RGB."""
    return ImageOps.exif_transpose(Image.open(io.BytesIO(bytes(data)))).convert("RGB")


class Food101Classifier:
    def __init__(self, model_dir: str | Path):
        self.model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
        # The Pillow backend: torchvision (the default backend) is never installed next to CPU torch.
        self.processor = AutoImageProcessor.from_pretrained(model_dir, backend="pil")
        config = self.model.config
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
        self._captured: list[torch.Tensor] = []
        self.heads = classification_layers(self.model, config.num_labels)
        for head in self.heads:
            head.register_forward_pre_hook(self._capture)
        self.embedding_dim = sum(head.in_features for head in self.heads)

    def _capture(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self._captured.append(inputs[0].flatten(start_dim=1))

    def pixels(self, photos: list[bytes]) -> torch.Tensor:
        images = [open_photo(data) for data in photos]
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def __call__(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (embedding [n, embedding_dim], probabilities [n, num_labels])."""
        self._captured.clear()
        with torch.inference_mode():
            logits = self.model(pixel_values=pixel_values).logits
            embedding = torch.cat(self._captured, dim=-1)
        self._captured.clear()
        return embedding, torch.softmax(logits.float(), dim=-1)
