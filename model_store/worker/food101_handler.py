"""TorchServe handler for the frozen Food-101 classifier.

Input: one photo per request, as the person sent it (JPEG/PNG/WebP bytes; the gateway checked
its headers only), and up to three more photos of the same plate from other angles (`angle_1` ..
`angle_3`). Every angle runs through the classifier in the same forward pass, and the plate's
answer pools them: the mean embedding, and probabilities from the mean log-probability (for a
single linear classification layer, as ViT's, that is the classifier's answer for the mean
embedding, so the nutrition head reads a consistent pair; on
photos whose angles are fooled independently it lifted top-1 from 92.1% to 95.9% with two angles
and 96.1% with four, where the mean of probabilities gave 95.3% with two: `bench/angles.py`).
Each photo is decoded here, once, at reduced scale (`photos.decode_for_model`, shipped from
model_store/worker/photos.py). Output per request (JSON): the top-k dishes with probabilities, plus the
image embedding and the full class-probability vector (float32, base64), so the nutrition model and
training never run the backbone again. The classifier itself (any transformers image-classification
family) is `food101_model.Food101Classifier`.

A photo that does not decode fails its own request only: its answer is `{"invalid_image": reason
for a person}` with status 400 (REST clients see the 400; TorchServe's gRPC API passes the body on
with OK, so `model_store.torchserve_client` reads the key); the other photos of the batch are answered.
"""

import base64
import json
import logging
import os

import torch
from ts.torch_handler.base_handler import BaseHandler

from model_store.worker.classifier import open_classifier
from model_store.worker.heap import keep_freed_memory
from model_store.worker.photos import InvalidImage, decode_for_model

TOP_K = 5
ANGLES = ("data", "angle_1", "angle_2", "angle_3")  # the request's photos of one plate, in order


def _f32_b64(values: torch.Tensor) -> str:
    return base64.b64encode(values.to(torch.float32).numpy().astype("<f4").tobytes()).decode("ascii")


class Food101Handler(BaseHandler):
    def initialize(self, context):
        model_dir = context.system_properties["model_dir"]
        keep_freed_memory()  # no page faults on every request's activations (worker_heap.py)
        torch.set_num_threads(int(os.environ.get("FOODCAL_TORCH_THREADS", "1")))
        with open(os.path.join(model_dir, "foodcal_classifier.json")) as handle:
            self.identity = json.load(handle)
        # The runtime and precision chosen at build time (speed and the accuracy guard, precision.py).
        self.classifier = open_classifier(
            model_dir, self.identity.get("runtime", "torch"), self.identity.get("precision", "fp32")
        )
        self.model = self.classifier.model
        guard = self.identity.get("guard", {}).get(
            f"{self.classifier.runtime}-{self.classifier.precision}", {}
        )
        logging.getLogger(__name__).info(
            "classifier %s on %s %s, guard against torch fp32: %s", self.identity["version"],
            self.classifier.runtime, self.classifier.precision,
            {k: round(v, 4) for k, v in guard.items() if isinstance(v, float) and k != "seconds_per_photo"},
        )  # fmt: skip
        self.labels = self.classifier.labels
        self.initialized = True

    def preprocess(self, data):
        """Decoded photos, every angle of every request; a request with a photo that does not
        decode is kept aside with its reason."""
        images, self.failed, self.angles = [], {}, []
        for index, row in enumerate(data):
            photos = [row.get("data") or row.get("body")] + [row[k] for k in ANGLES[1:] if row.get(k)]
            try:
                decoded = [decode_for_model(photo, self.classifier.input_short_side) for photo in photos]
            except InvalidImage as error:
                self.failed[index] = (
                    str(error) if len(photos) == 1 else f"one of the {len(photos)} photos: {error}"
                )
                decoded = []
            images += decoded
            self.angles.append(len(decoded))
        return images

    def inference(self, images, *args, **kwargs):
        return self.classifier(self.classifier.pixels(images)) if images else None

    def postprocess(self, data):
        answers = iter(self._answers(*self._pooled(*data)) if data is not None else [])
        responses = []
        for index in range(len(self.angles)):
            if index in self.failed:
                self.context.set_response_status(400, self.failed[index], idx=index)
                responses.append({"invalid_image": self.failed[index]})
            else:
                responses.append(next(answers))
        return responses

    def _pooled(self, embeddings, probabilities):
        """One (embedding, probabilities) per request from its angles' (see the module's docstring)."""
        pooled_embeddings, pooled_probabilities, start = [], [], 0
        for count in (n for n in self.angles if n):
            rows = slice(start, start + count)
            pooled_embeddings.append(embeddings[rows].float().mean(dim=0))
            log_mean = probabilities[rows].float().clamp_min(1e-12).log().mean(dim=0)
            pooled_probabilities.append(torch.softmax(log_mean, dim=-1))
            start += count
        return torch.stack(pooled_embeddings), torch.stack(pooled_probabilities)

    def _answers(self, embeddings, probabilities):
        top_p, top_i = probabilities.topk(TOP_K, dim=-1)
        return [
            {
                "dishes": [[self.labels[i], p] for i, p in zip(idx.tolist(), ps.tolist(), strict=True)],
                "embedding": _f32_b64(embedding),
                "probabilities": _f32_b64(probs),
                "classifier": self.identity["version"],
                "demo": self.identity["demo"],
                "angles": angles,
            }
            for embedding, probs, ps, idx, angles in zip(
                embeddings, probabilities, top_p, top_i, [n for n in self.angles if n], strict=True
            )
        ]
