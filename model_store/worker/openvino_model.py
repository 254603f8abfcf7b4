"""The classifier on OpenVINO's CPU runtime: the same interface as `Food101Classifier` (pixels,
labels, `__call__` -> (embedding, probabilities)), from an IR converted at `make models`
(`model_store.openvino_convert`). Shipped into food101.mar beside food101_model.py; it loads no
torch weights, so a worker holds one copy of the model.

Compiled for one caller in one thread (as a TorchServe worker runs, one per core), with CPU pinning
off: every worker is its own process and would otherwise pin itself to the same cores. `fp32` and
`int8` ask for f32 arithmetic explicitly (where the CPU has native bf16 OpenVINO would pick bf16,
for the int8 IR's float layers too: the head stays f32); `bf16` is the fp32 IR run in bf16.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoImageProcessor

from model_store.worker.food101_model import input_short_side

PRECISIONS = ("fp32", "bf16", "int8")
IR_FILES = {"fp32": "openvino_fp32", "bf16": "openvino_fp32", "int8": "openvino_int8"}


def ir_path(model_dir: str | Path, precision: str) -> Path:
    return Path(model_dir) / f"{IR_FILES[precision]}.xml"


def compile_ir(xml: Path, precision: str, threads: int | None = None):
    import openvino as ov

    threads = threads or int(os.environ.get("FOODCAL_TORCH_THREADS", "1"))
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "INFERENCE_NUM_THREADS": str(threads),
        "ENABLE_CPU_PINNING": "NO",
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
    }
    return ov.Core().compile_model(str(xml), "CPU", config)


def native_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoClassifier:
    runtime = "openvino"

    def __init__(self, model_dir: str | Path, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.precision = precision
        self.model = compile_ir(ir_path(model_dir, precision), precision)
        self.request = self.model.create_infer_request()  # one caller per worker: reused
        self.processor = AutoImageProcessor.from_pretrained(model_dir, backend="pil")
        self.input_short_side = input_short_side(self.processor)
        config = AutoConfig.from_pretrained(model_dir)
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
        self.embedding_dim = int(self.model.outputs[0].get_partial_shape()[1].get_length())

    def pixels(self, images) -> torch.Tensor:
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def __call__(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (embedding [n, embedding_dim], probabilities [n, num_labels]), float32."""
        outputs = self.request.infer([np.ascontiguousarray(pixel_values.numpy(), dtype=np.float32)])
        embedding, probabilities = (torch.from_numpy(np.array(outputs[i])) for i in range(2))
        return embedding, probabilities
