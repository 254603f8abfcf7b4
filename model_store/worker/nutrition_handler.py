"""TorchServe handler for the nutrition head.

Input per request: `embedding` and `probabilities` as little-endian float32 bytes (the classifier's
output, unchanged). Output per request (JSON): the four nutrients and the model version.
"""

import os

import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler

from model_store.worker.nutrition_model import NUTRIENTS, NutritionModel


def _floats(row: dict, key: str, length: int) -> np.ndarray:
    raw = row.get(key)
    if raw is None and isinstance(row.get("body"), dict):  # REST JSON body
        return np.asarray(row["body"][key], dtype=np.float32)
    if raw is None:
        raise ValueError(f"missing input {key!r}")
    values = np.frombuffer(bytes(raw), dtype="<f4")
    if values.shape != (length,):
        raise ValueError(f"{key} must hold {length} float32 values, got {values.size}")
    return values


class NutritionHandler(BaseHandler):
    def initialize(self, context):
        model_dir = context.system_properties["model_dir"]
        torch.set_num_threads(1)
        checkpoint = torch.load(
            os.path.join(model_dir, "nutrition.pth"), map_location="cpu", weights_only=True
        )
        self.model = NutritionModel.from_checkpoint(checkpoint)
        self.version = int(checkpoint["version"])
        self.initialized = True

    def preprocess(self, data):
        embeddings = [_floats(row, "embedding", self.model.embedding_dim) for row in data]
        probabilities = [_floats(row, "probabilities", self.model.num_classes) for row in data]
        return torch.from_numpy(np.stack(embeddings)), torch.from_numpy(np.stack(probabilities))

    def inference(self, data, *args, **kwargs):
        with torch.inference_mode():
            return self.model(*data)

    def postprocess(self, data):
        return [{**dict(zip(NUTRIENTS, row, strict=True)), "version": self.version} for row in data.tolist()]
