"""TorchServe handler for the frozen Food-101 classifier.

Input: one image (JPEG/PNG/WebP bytes) per request. Output per request (JSON): the top-k dishes
with probabilities, plus the image embedding and the full class-probability vector (float32,
base64), so the nutrition model and training never run the backbone again.
"""

import base64
import io
import json
import os

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers import AutoModelForImageClassification
from ts.torch_handler.base_handler import BaseHandler

TOP_K = 5


def _f32_b64(values: torch.Tensor) -> str:
    return base64.b64encode(values.to(torch.float32).numpy().astype("<f4").tobytes()).decode("ascii")


class Food101Handler(BaseHandler):
    def initialize(self, context):
        model_dir = context.system_properties["model_dir"]
        torch.set_num_threads(int(os.environ.get("FOODCAL_TORCH_THREADS", "1")))
        self.model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        with open(os.path.join(model_dir, "preprocessor_config.json")) as handle:
            self.preprocessing = json.load(handle)
        with open(os.path.join(model_dir, "foodcal_classifier.json")) as handle:
            self.classifier = json.load(handle)
        self.initialized = True

    def _image_size(self) -> tuple[int, int]:
        size = self.preprocessing.get("size", 224)
        if isinstance(size, int):
            return size, size
        if "height" in size:
            return size["height"], size["width"]
        return size["shortest_edge"], size["shortest_edge"]

    def _to_array(self, data) -> np.ndarray:
        # The checkpoint's own preprocessor_config.json, applied with Pillow and NumPy.
        config = self.preprocessing
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(bytes(data)))).convert("RGB")
        height, width = self._image_size()
        if config.get("do_resize", True):
            image = image.resize((width, height), resample=Image.Resampling(config.get("resample", 2)))
        array = np.asarray(image, dtype=np.float32)
        if config.get("do_rescale", True):
            array = array * float(config.get("rescale_factor", 1 / 255))
        if config.get("do_normalize", True):
            array = (array - np.asarray(config["image_mean"], np.float32)) / np.asarray(
                config["image_std"], np.float32
            )
        return array.transpose(2, 0, 1)

    def preprocess(self, data):
        images = [self._to_array(row.get("data") or row.get("body")) for row in data]
        return torch.from_numpy(np.stack(images))

    def inference(self, data, *args, **kwargs):
        with torch.inference_mode():
            backbone = getattr(self.model, self.model.base_model_prefix)
            output = backbone(pixel_values=data)
            pooled = getattr(output, "pooler_output", None)
            # ViT has no pooler: its embedding is the final-layernorm CLS token.
            embedding = pooled if pooled is not None else output.last_hidden_state[:, 0]
            probabilities = torch.softmax(self.model.classifier(embedding), dim=-1)
        return embedding, probabilities

    def postprocess(self, data):
        embeddings, probabilities = data
        top_p, top_i = probabilities.topk(TOP_K, dim=-1)
        return [
            {
                "dishes": [[self.labels[i], p] for i, p in zip(idx.tolist(), ps.tolist(), strict=True)],
                "embedding": _f32_b64(embedding),
                "probabilities": _f32_b64(probs),
                "classifier": self.classifier["version"],
                "demo": self.classifier["demo"],
            }
            for embedding, probs, ps, idx in zip(embeddings, probabilities, top_p, top_i, strict=True)
        ]
