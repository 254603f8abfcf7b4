"""TorchServe handler for the frozen Food-101 classifier.

Input: one image (JPEG/PNG/WebP bytes) per request. Output per request (JSON): the top-k dishes
with probabilities, plus the image embedding and the full class-probability vector (float32,
base64), so the nutrition model and training never run the backbone again. The classifier itself
(any transformers image-classification family) is `food101_model.Food101Classifier`.
"""

import base64
import json
import os

import torch
from food101_model import Food101Classifier
from ts.torch_handler.base_handler import BaseHandler

TOP_K = 5


def _f32_b64(values: torch.Tensor) -> str:
    return base64.b64encode(values.to(torch.float32).numpy().astype("<f4").tobytes()).decode("ascii")


class Food101Handler(BaseHandler):
    def initialize(self, context):
        model_dir = context.system_properties["model_dir"]
        torch.set_num_threads(int(os.environ.get("FOODCAL_TORCH_THREADS", "1")))
        with open(os.path.join(model_dir, "foodcal_classifier.json")) as handle:
            self.identity = json.load(handle)
        # The precision chosen at build time (speed and the accuracy guard, model_store/precision.py).
        self.classifier = Food101Classifier(model_dir, self.identity.get("precision", "fp32"))
        self.model = self.classifier.model
        self.labels = self.classifier.labels
        self.initialized = True

    def preprocess(self, data):
        return self.classifier.pixels([row.get("data") or row.get("body") for row in data])

    def inference(self, data, *args, **kwargs):
        return self.classifier(data)

    def postprocess(self, data):
        embeddings, probabilities = data
        top_p, top_i = probabilities.topk(TOP_K, dim=-1)
        return [
            {
                "dishes": [[self.labels[i], p] for i, p in zip(idx.tolist(), ps.tolist(), strict=True)],
                "embedding": _f32_b64(embedding),
                "probabilities": _f32_b64(probs),
                "classifier": self.identity["version"],
                "demo": self.identity["demo"],
            }
            for embedding, probs, ps, idx in zip(embeddings, probabilities, top_p, top_i, strict=True)
        ]
