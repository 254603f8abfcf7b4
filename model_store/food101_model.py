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
- Precision: `fp32`; `bf16` (autocast: AVX-512 BF16 / AMX matmuls); `int8` (dynamic quantisation
  of every `Linear` but the classification layers, which stay fp32 and keep the embedding hook).
  Which one is served is decided at build time by `model_store.precision` (speed and an accuracy
  guard against fp32).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from transformers import AutoImageProcessor, AutoModelForImageClassification

PRECISIONS = ("fp32", "bf16", "int8")


class NotAClassifier(ValueError):
    """The checkpoint has no layer that maps features to one output per label."""


def classification_layers(model: nn.Module, num_labels: int) -> list[nn.Linear]:
    layers = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_labels]
    if not layers:
        raise NotAClassifier(
            f"{type(model).__name__} has no Linear layer with {num_labels} outputs to take the embedding from"
        )
    return layers


def _quantize_linears(model: nn.Module, keep: list[nn.Linear]) -> nn.Module:
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    spec = {
        name: default_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and all(module is not head for head in keep)
    }
    with warnings.catch_warnings():  # torch.ao's deprecation notices, once per layer
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)  # keeps `keep` itself


def input_short_side(processor, default: int = 256) -> int:
    """The short side the image processor resizes a photo to, before any crop: a photo decoded at
    least this large (`decode_for_model`) loses nothing the classifier would see."""
    size = processor.size

    def get(key: str):
        return size.get(key) if isinstance(size, dict) else getattr(size, key, None)

    edge = get("shortest_edge")
    if edge:
        crop_pct = getattr(processor, "crop_pct", None)  # ConvNeXt's rule: edge / crop_pct, then a crop
        return math.ceil(edge / crop_pct) if crop_pct and edge < 384 else int(edge)
    height, width = get("height"), get("width")
    return int(min(height, width)) if height and width else default


class Food101Classifier:
    def __init__(self, model_dir: str | Path, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.precision = precision
        self.model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
        # The Pillow backend: torchvision (the default backend) is never installed next to CPU torch.
        self.processor = AutoImageProcessor.from_pretrained(model_dir, backend="pil")
        self.input_short_side = input_short_side(self.processor)
        config = self.model.config
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
        self._captured: list[torch.Tensor] = []
        self.heads = classification_layers(self.model, config.num_labels)
        if precision == "int8":
            self.model = _quantize_linears(self.model, keep=self.heads)
        for head in self.heads:
            head.register_forward_pre_hook(self._capture)
        self.embedding_dim = sum(head.in_features for head in self.heads)

    def _capture(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self._captured.append(inputs[0].flatten(start_dim=1))

    def pixels(self, images: list[Image.Image]) -> torch.Tensor:
        """`images`: decoded, upright, RGB (`foodcal.photos.decode_for_model`, `photos` in the .mar)."""
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def __call__(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (embedding [n, embedding_dim], probabilities [n, num_labels])."""
        self._captured.clear()
        autocast = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if self.precision == "bf16"
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            logits = self.model(pixel_values=pixel_values).logits
        embedding = torch.cat([c.float() for c in self._captured], dim=-1)
        self._captured.clear()
        return embedding, torch.softmax(logits.float(), dim=-1)
