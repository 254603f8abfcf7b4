"""Handlers unit-tested with a mock context, without a server (as pytorch/serve does)."""

import base64
import json
import sys
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from model_store.archive import HANDLERS
from tests.conftest import photo


@pytest.fixture
def unpacked(model_store, tmp_path):
    """A .mar extracted the way TorchServe does: its files flat in model_dir, on sys.path."""

    def unpack(name):
        target = tmp_path / name
        with zipfile.ZipFile(model_store / name) as archive:
            archive.extractall(target)
        sys.path.insert(0, str(target))
        return SimpleNamespace(system_properties={"model_dir": str(target)}, manifest={})

    yield unpack
    sys.path[:] = [p for p in sys.path if not p.startswith(str(tmp_path))]
    for module in ("food101_handler", "food101_model", "photos", "nutrition_handler", "nutrition_model"):
        sys.modules.pop(module, None)


def _handler(module_name):
    sys.path.insert(0, str(HANDLERS))
    try:
        module = __import__(module_name)
    finally:
        sys.path.remove(str(HANDLERS))
    return module


def test_food101_handler_returns_topk_embedding_and_probabilities_for_a_batch(unpacked):
    context = unpacked("food101.mar")
    handler = _handler("food101_handler").Food101Handler()
    handler.initialize(context)
    batch = [{"data": bytearray(photo())}, {"body": photo(fmt="PNG", color=(20, 200, 90))}]
    outputs = handler.postprocess(handler.inference(handler.preprocess(batch)))
    assert len(outputs) == 2
    for output in outputs:
        assert len(output["dishes"]) == 5
        assert all(label in handler.labels for label, _ in output["dishes"])
        probabilities = np.frombuffer(base64.b64decode(output["probabilities"]), "<f4")
        embedding = np.frombuffer(base64.b64decode(output["embedding"]), "<f4")
        assert probabilities.shape == (101,) and probabilities.sum() == pytest.approx(1.0, abs=1e-4)
        assert embedding.shape == (handler.classifier.embedding_dim,) == (handler.model.config.hidden_size,)
        assert output["demo"] is True and output["classifier"].startswith("demo@")
    assert outputs[0]["embedding"] != outputs[1]["embedding"]


def test_a_photo_that_does_not_decode_fails_alone_with_400_and_a_reason(unpacked):
    context = unpacked("food101.mar")
    handler = _handler("food101_handler").Food101Handler()
    handler.initialize(context)
    statuses = {}

    def set_response_status(code, phrase, idx):
        statuses[idx] = code

    handler.context = SimpleNamespace(set_response_status=set_response_status)
    whole = photo(size=(320, 240))
    batch = [{"data": bytearray(whole)}, {"data": bytearray(whole[: len(whole) // 3])}, {"body": whole}]
    outputs = handler.postprocess(handler.inference(handler.preprocess(batch)))
    assert [sorted(output) for output in outputs][1] == ["invalid_image"]
    assert outputs[1]["invalid_image"] == "the JPEG data is corrupt or truncated"
    assert statuses == {1: 400}
    assert len(outputs[0]["dishes"]) == len(outputs[2]["dishes"]) == 5  # the others are answered
    assert outputs[0]["probabilities"] == outputs[2]["probabilities"]


def test_food101_embedding_gives_exactly_the_checkpoints_logits(unpacked):
    context = unpacked("food101.mar")
    handler = _handler("food101_handler").Food101Handler()
    handler.initialize(context)
    images = handler.preprocess([{"data": photo()}])
    _, probabilities = handler.inference(images)
    pixels = handler.classifier.pixels(images)
    with torch.inference_mode():
        logits = handler.model(pixel_values=pixels).logits
    assert torch.allclose(probabilities, torch.softmax(logits, -1), atol=1e-6)


def test_nutrition_v0_equals_the_table_for_a_one_hot_input(unpacked):
    context = unpacked("nutrition-v0.mar")
    handler = _handler("nutrition_handler").NutritionHandler()
    handler.initialize(context)
    from model_store.reference import food101_labels, lookup

    index = food101_labels().index("pizza")
    one_hot = np.zeros(101, "<f4")
    one_hot[index] = 1
    row = {
        "embedding": np.zeros(handler.model.embedding_dim, "<f4").tobytes(),
        "probabilities": one_hot.tobytes(),
    }
    (output,) = handler.postprocess(handler.inference(handler.preprocess([row])))
    assert output["version"] == 0
    expected = lookup("pizza").nutrients
    got = (output["calories_kcal"], output["proteins_g"], output["fats_g"], output["carbs_g"])
    assert got == pytest.approx(expected, rel=1e-5)


def test_nutrition_handler_refuses_wrong_sized_inputs(unpacked):
    context = unpacked("nutrition-v0.mar")
    handler = _handler("nutrition_handler").NutritionHandler()
    handler.initialize(context)
    with pytest.raises(ValueError, match="probabilities must hold 101"):
        handler.preprocess([{"embedding": np.zeros(48, "<f4").tobytes(), "probabilities": b"\x00" * 8}])


def test_nutrition_outputs_are_finite_and_never_negative():
    from model_store.worker.nutrition_model import NutritionModel

    model = NutritionModel(8, 101, hidden_size=16)
    model.table.fill_(100.0)
    torch.nn.init.normal_(model.residual[-1].weight, std=50.0)  # a wild residual
    out = model(torch.randn(64, 8) * 100, torch.softmax(torch.randn(64, 101), -1))
    assert torch.isfinite(out).all() and (out >= 0).all()


def test_classifier_identity_names_the_demo(model_store):
    identity = json.loads(
        (model_store.parent / "checkpoints" / "food101" / "foodcal_classifier.json").read_text()
    )
    assert identity["demo"] is True and identity["version"].startswith("demo@")
