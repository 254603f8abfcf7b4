"""FOOD101_RUNTIME: the classifier on torch or OpenVINO, chosen at `make models` by speed and the
accuracy guard (against torch fp32), on a classifier as confident as a fine-tuned one."""

import logging
import zipfile

import pytest

from model_store.build import build_models
from model_store.checkpoint import write_random_vit
from model_store.confident import embeddings, make_confident
from model_store.openvino_convert import ConversionFailed, convert
from model_store.precision import GuardResult, choose_served, guard_photos
from model_store.worker.food101_model import Food101Classifier
from tests.classifier_families import load_food101_handler
from tests.conftest import make_settings

SMALL_VIT = dict(image_size=64, patch_size=8, hidden_size=96, num_hidden_layers=3, num_attention_heads=3,
                 intermediate_size=384)  # fmt: skip


def result(runtime, precision, seconds, probability=0.0):
    return GuardResult(precision, 1.0, probability, 1.0, 0.0, seconds, runtime)


def runtimes(**openvino):
    torch_results = {"fp32": result("torch", "fp32", 1.0), "int8": result("torch", "int8", 0.5, 0.2)}
    return {"torch": torch_results, "openvino": {p: result("openvino", p, *v) for p, v in openvino.items()}}


def test_auto_serves_the_fastest_runtime_and_precision_that_passes_the_guard(caplog):
    results = runtimes(fp32=(0.5,), int8=(0.15,))
    with caplog.at_level(logging.INFO, logger="model_store.precision"):
        served = choose_served("auto", "auto", results)
    assert (served.runtime, served.precision) == ("openvino", "int8")
    assert "torch int8 not used: a probability moved 0.2000 > 0.03" in caplog.text
    failing = runtimes(fp32=(0.5,), int8=(0.15, 0.3))  # int8 fails: OpenVINO's fp32 is still 2x torch's
    served = choose_served("auto", "auto", failing)
    assert (served.runtime, served.precision) == ("openvino", "fp32")
    barely = runtimes(fp32=(0.95,), int8=(0.95, 0.3))  # not 10% faster: torch, which needs no conversion
    assert choose_served("auto", "auto", barely).runtime == "torch"


def test_an_asked_for_runtime_that_was_not_built_falls_back_to_torch_saying_why(caplog):
    results = {"torch": runtimes()["torch"]}
    with caplog.at_level(logging.WARNING, logger="model_store.precision"):
        assert choose_served("openvino", "fp32", results).runtime == "torch"
    assert "FOOD101_RUNTIME=openvino falls back to torch: no openvino model was built" in caplog.text
    slower = runtimes(fp32=(2.0,))  # asked for by name: served although slower, since it passes
    assert choose_served("openvino", "fp32", slower).runtime == "openvino"


@pytest.fixture(scope="module")
def confident(tmp_path_factory):
    checkpoint = tmp_path_factory.mktemp("confident")
    write_random_vit(checkpoint, **SMALL_VIT)
    make_confident(checkpoint)
    return checkpoint


def test_the_confident_classifier_is_sure_of_itself_on_the_guard_photos(confident):
    _, probabilities = embeddings(Food101Classifier(confident), guard_photos())
    top1 = probabilities.max(-1).values
    assert top1.median() > 0.8 and (top1 > 0.8).float().mean() >= 0.5
    assert len(set(probabilities.argmax(-1).tolist())) >= 4  # different photos, different dishes


def test_openvino_is_served_by_the_same_handler_with_the_same_answer(confident, tmp_path):
    stores = {}
    for runtime in ("torch", "openvino"):
        settings = make_settings(
            tmp_path / runtime, food101_model=str(confident), food101_precision="fp32",
            food101_runtime=runtime, model_store_dir=tmp_path / runtime / "mar",
        )  # fmt: skip
        stores[runtime] = (build_models(settings), settings.model_store_dir / "food101.mar")
    identity, mar = stores["openvino"]
    assert (identity["runtime"], identity["precision"]) == ("openvino", "fp32")
    assert identity["version"] == f"{stores['torch'][0]['version']}:openvino-fp32"
    assert identity["guard"]["openvino-fp32"]["passed"] and "torch-fp32" in identity["guard"]
    names = zipfile.ZipFile(mar).namelist()
    assert "openvino_fp32.xml" in names and "model.safetensors" not in names  # one copy of the weights
    torch_handler = load_food101_handler(stores["torch"][1], tmp_path / "a")
    openvino_handler = load_food101_handler(mar, tmp_path / "b")
    assert openvino_handler.classifier.runtime == "openvino"
    batch = [{"data": bytearray(photo)} for photo in guard_photos()[:3]]
    expected = torch_handler.postprocess(torch_handler.inference(torch_handler.preprocess(batch)))
    answers = openvino_handler.postprocess(openvino_handler.inference(openvino_handler.preprocess(batch)))
    for answer, reference in zip(answers, expected, strict=True):
        assert [d for d, _ in answer["dishes"]] == [d for d, _ in reference["dishes"]]
        assert [p for _, p in answer["dishes"]] == pytest.approx(
            [p for _, p in reference["dishes"]], abs=1e-4
        )
        assert len(answer["embedding"]) == len(reference["embedding"])


def test_static_int8_keeps_the_head_in_float_and_an_int8_that_moves_the_answer_falls_back(
    confident, tmp_path, caplog
):
    settings = make_settings(tmp_path, food101_model=str(confident), food101_precision="int8",
                             food101_runtime="openvino", model_store_dir=tmp_path / "mar")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="model_store.precision"):
        identity = build_models(settings)
    guard = identity["guard"]["openvino-int8"]
    # Measured: on a model this sure of itself, static int8 moves the top probability (this small
    # ViT: max Δp 1.0); the guard refuses it and says why, as for torch's dynamic int8.
    if not guard["passed"]:
        assert (identity["runtime"], identity["precision"]) == ("openvino", "fp32")
        assert "FOOD101_PRECISION=int8 falls back to bf16: a probability moved" in caplog.text
    import openvino as ov

    ir = ov.Core().read_model(
        str(settings.model_store_dir.parent / "checkpoints" / "food101" / "openvino_int8.xml")
    )
    quantized = [op for op in ir.get_ops() if op.get_type_name() == "FakeQuantize"]
    head = [
        op for op in ir.get_ops() if op.get_type_name() == "MatMul" and "classifier" in op.get_friendly_name()
    ]
    assert quantized and head  # int8 elsewhere, and the head's inputs in float:
    assert all(i.get_node().get_type_name() != "FakeQuantize" for op in head for i in op.input_values())


def test_static_int8_with_min_max_activation_ranges_moves_the_answer_less_than_nncfs_default(
    confident, tmp_path, monkeypatch
):
    import shutil

    from model_store import openvino_convert
    from model_store.precision import measure

    guards = {}
    for ranges in ("MINMAX", None):  # ours, and NNCF's default quantile ranges
        checkpoint = shutil.copytree(confident, tmp_path / str(ranges))
        monkeypatch.setattr(openvino_convert, "ACTIVATION_RANGES", ranges)
        convert(checkpoint)
        guards[ranges] = measure(checkpoint, guard_photos(), ("torch", "openvino"))["openvino"]["int8"]
    # Measured on this small ViT: cosine 0.997 vs 0.944, max Δp 0.87 vs 1.0 (ViT-B/16: 0.999 vs 0.990)
    assert guards["MINMAX"].embedding_cosine_min > guards[None].embedding_cosine_min
    assert guards["MINMAX"].calories_max_relative_difference < guards[None].calories_max_relative_difference


def test_a_family_that_fails_conversion_is_served_by_torch_with_a_logged_reason(
    confident, tmp_path, monkeypatch, caplog
):
    def broken(*args, **kwargs):
        raise RuntimeError("no converter for this op")

    import openvino

    monkeypatch.setattr(openvino, "convert_model", broken)
    with pytest.raises(ConversionFailed, match="no converter for this op"):
        convert(confident)
    settings = make_settings(tmp_path, food101_model=str(confident), food101_precision="fp32",
                             food101_runtime="openvino", model_store_dir=tmp_path / "mar")  # fmt: skip
    with caplog.at_level(logging.WARNING):
        identity = build_models(settings)
    assert identity["runtime"] == "torch"
    assert "not converted to OpenVINO, torch serves it: RuntimeError: no converter for this op" in caplog.text


def test_the_guard_photos_are_never_the_calibration_photos():
    from model_store.sample_photos import photo_like

    assert not set(guard_photos()) & set(photo_like(32))
