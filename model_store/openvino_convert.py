"""`make models`, FOOD101_RUNTIME=openvino|auto: the classifier converted into OpenVINO IR files
beside the checkpoint, fp32 (also run in bf16) and static int8.

- Converted with OpenVINO's own converter (`openvino.convert_model`) from the transformers model,
  wrapped so that the graph has two outputs: the embedding (the classification layer's input, the
  same hook as `Food101Classifier`) and the 101 probabilities (softmax in the graph). Batch is dynamic.
- int8: NNCF post-training quantisation, calibrated on `CALIBRATION_PHOTOS` photo-like pictures
  (never the guard's), activation ranges by min/max, the classification layer in f32, transformer
  families with NNCF's transformer scheme (LayerNorm, GELU and softmax stay float), no SmoothQuant.
A family that fails conversion is reported by `ConversionFailed`; the build serves torch then.

Min/max ranges because they moved the answer least of the recipes tried on the confident ViT-B/16;
no int8 recipe tried passes the guard on it (weights alone in int8 move a probability by 0.022 of
the 0.03 allowed): each try and what it gave is in docs/operations.md ("int8 on a confident model").
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from model_store.sample_photos import photo_like
from model_store.worker.food101_model import Food101Classifier
from model_store.worker.openvino_model import ir_path
from model_store.worker.photos import decode_for_model

log = logging.getLogger(__name__)
CALIBRATION_PHOTOS = 32
# min/max, not NNCF's default quantiles: clipping a few large activations moved the answer most
ACTIVATION_RANGES: str | None = "MINMAX"  # a RangeEstimatorParametersSet name; None: NNCF's default


class ConversionFailed(RuntimeError):
    pass


class _EmbeddingAndProbabilities(nn.Module):
    def __init__(self, classifier: Food101Classifier):
        super().__init__()
        self.classifier = classifier
        self.model = classifier.model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.classifier._captured.clear()
        logits = self.model(pixel_values=pixel_values).logits
        embedding = torch.cat(self.classifier._captured, dim=-1)
        self.classifier._captured.clear()
        return embedding, torch.softmax(logits, dim=-1)


def _head_matmuls(ov_model, num_labels: int) -> list[str]:
    """The graph's MatMuls with one output per label: the classification layer(s)."""
    return [
        op.get_friendly_name()
        for op in ov_model.get_ops()
        if op.get_type_name() == "MatMul"
        and op.get_output_partial_shape(0)[-1].is_static
        and op.get_output_partial_shape(0)[-1].get_length() == num_labels
    ]


def convert(checkpoint_dir: Path, calibration: list[bytes] | None = None) -> None:
    """Writes the fp32 and int8 IRs into `checkpoint_dir`; raises ConversionFailed with the reason."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    try:
        classifier = Food101Classifier(checkpoint_dir)
        photos = calibration if calibration is not None else photo_like(CALIBRATION_PHOTOS)
        pixels = [classifier.pixels([decode_for_model(p, classifier.input_short_side)]) for p in photos]
        shape = list(pixels[0].shape)
        with torch.inference_mode(False), torch.no_grad():
            ov_model = ov.convert_model(
                _EmbeddingAndProbabilities(classifier).eval(),
                example_input=pixels[0],
                input=[([-1, *shape[1:]], ov.Type.f32)],
            )
        ov.save_model(ov_model, ir_path(checkpoint_dir, "fp32"), compress_to_fp16=False)
        heads = _head_matmuls(ov_model, len(classifier.labels))
        ranges = {}
        if ACTIVATION_RANGES:
            estimator = getattr(RangeEstimatorParametersSet, ACTIVATION_RANGES)
            ranges["activations_range_estimator_params"] = estimator
        transformer = getattr(classifier.model.config, "num_attention_heads", None) is not None
        quantized = nncf.quantize(
            ov_model,
            nncf.Dataset([p.numpy() for p in pixels]),
            subset_size=len(pixels),
            model_type=nncf.ModelType.TRANSFORMER if transformer else None,
            ignored_scope=nncf.IgnoredScope(names=heads, validate=False),
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1),  # -1: off
                **ranges,
            ),
        )
        ov.save_model(quantized, ir_path(checkpoint_dir, "int8"), compress_to_fp16=False)
    except Exception as error:  # any family the converter or NNCF cannot take: torch serves it
        raise ConversionFailed(f"{type(error).__name__}: {str(error).strip()[:300]}") from error
