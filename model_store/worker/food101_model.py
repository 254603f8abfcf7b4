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
- Precision: `fp32`; `bf16` (the weights held in bf16, so no cast per call: AVX-512 BF16 / AMX
  matmuls; autocast re-cast 86M ViT-B weights on every forward pass, 1.8x slower on an AMX Xeon;
  the Linears' weights packed once for oneDNN: `PackedBf16Linear`);
  `int8` (dynamic quantisation of every `Linear` but the classification layers, which stay fp32 and
  keep the embedding hook, on oneDNN's kernels; on a CPU with native bf16, attention's two matmuls in
  bf16 too: `bf16_matmul_attention`).
  Which one is served is decided at build time by `model_store.precision` (speed and an accuracy
  guard against fp32).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from transformers import AttentionInterface, AutoImageProcessor, AutoModelForImageClassification
from transformers.integrations.sdpa_attention import sdpa_attention_forward

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


def native_bf16() -> bool:
    """This CPU computes bf16 natively (AVX-512 BF16 or AMX), as oneDNN sees it."""
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def int8_engine() -> str | None:
    """oneDNN's int8 kernels where this PyTorch has them: 1.8x fbgemm's on an AMX Xeon (AMX-INT8),
    level with it on a Zen 4 (VNNI); fbgemm otherwise. Weights are packed for the engine that is
    current when they are quantised, so it is set before quantising and stays set for the process."""
    engines = torch.backends.quantized.supported_engines
    return next((engine for engine in ("onednn", "fbgemm") if engine in engines), None)


def _quantize_linears(model: nn.Module, keep: list[nn.Linear]) -> nn.Module:
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    torch.backends.quantized.engine = int8_engine()
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


class PackedBf16Linear(nn.Module):
    """A bf16 Linear whose weight oneDNN packs once, into its blocked layout, on the first call (the
    real row count is the packing hint). A plain bf16 Linear reorders its weight on every call:
    ViT-B/16 on an AMX Xeon, one thread, 157 vs 180 ms, the same outputs to the bit."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight.detach()
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.packed: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.packed is None:
            self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, rows.shape[0])
            self.weight = None  # the packed copy is the one used
        out = torch.ops.mkldnn._linear_pointwise(rows, self.packed, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)


def _pack_bf16_linears(model: nn.Module, keep: list[nn.Linear]) -> None:
    """Every Linear but the classification layers (they keep the embedding hook)."""
    if not native_bf16():
        return
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and all(child is not head for head in keep):
                setattr(module, name, PackedBf16Linear(child))


def bf16_matmul_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention for the int8 model: with its Linears in int8, attention's two fp32 matmuls are
    ~17% of a ViT-B/16 forward pass for 4% of its FLOPs; in bf16 the pass is 2-3% faster (softmax
    stays fp32; the accuracy guard measures the result). Anything but plain bidirectional
    attention (a mask, a position bias, grouped heads, dropout) is left to transformers' SDPA."""
    plain = (
        attention_mask is None
        and kwargs.get("position_bias") is None
        and not kwargs.get("is_causal")
        and not dropout
        and query.shape[1] == key.shape[1]
    )
    if not plain:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    query = (query * scale).to(torch.bfloat16, memory_format=torch.contiguous_format)
    key = key.to(torch.bfloat16, memory_format=torch.contiguous_format)
    weights = torch.softmax(torch.matmul(query, key.transpose(-1, -2)), dim=-1, dtype=torch.float32)
    output = torch.matmul(weights.bfloat16(), value.to(torch.bfloat16, memory_format=torch.contiguous_format))
    return output.float().transpose(1, 2).contiguous(), None


AttentionInterface.register("foodcal_bf16_matmul", bf16_matmul_attention)


def _attention_in_bf16(model: nn.Module) -> None:
    """Only where bf16 is native, and only for models that already route attention through
    transformers' interface (SDPA); CNNs and families with their own attention code are left."""
    uses_interface = getattr(model.config, "_attn_implementation", None) == "sdpa"
    if uses_interface and native_bf16():
        model.set_attn_implementation("foodcal_bf16_matmul")


class Food101Classifier:
    runtime = "torch"

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
            _attention_in_bf16(self.model)
        elif precision == "bf16":
            self.model = self.model.to(torch.bfloat16)
            _pack_bf16_linears(self.model, keep=self.heads)
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        for head in self.heads:
            head.register_forward_pre_hook(self._capture)
        self.embedding_dim = sum(head.in_features for head in self.heads)

    def _capture(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self._captured.append(inputs[0].flatten(start_dim=1))

    def pixels(self, images: list[Image.Image]) -> torch.Tensor:
        """`images`: decoded, upright, RGB (`model_store.worker.photos.decode_for_model`)."""
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def __call__(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (embedding [n, embedding_dim], probabilities [n, num_labels])."""
        self._captured.clear()
        with torch.inference_mode():
            logits = self.model(pixel_values=pixel_values.to(self.dtype)).logits
        embedding = torch.cat([c.float() for c in self._captured], dim=-1)
        self._captured.clear()
        return embedding, torch.softmax(logits.float(), dim=-1)
