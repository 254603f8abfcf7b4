"""The classifier's precision: chosen at `make models` by speed and an accuracy guard against fp32."""

import logging

import pytest
import torch

from model_store import precision
from model_store.build import build_models
from model_store.precision import GuardResult, choose, guard_photos
from model_store.worker.food101_model import PackedBf16Linear
from tests.classifier_families import load_food101_handler
from tests.conftest import make_settings


def result(name, seconds, cosine=1.0, probability=0.0, top1=1.0, calories=0.0):
    return GuardResult(name, cosine, probability, top1, calories, seconds)


FP32 = result("fp32", 1.0)


def test_auto_serves_the_fastest_precision_that_passes_the_guard(caplog):
    results = {"fp32": FP32, "bf16": result("bf16", 0.35), "int8": result("int8", 0.2, top1=0.5)}
    with caplog.at_level(logging.INFO, logger="model_store.precision"):
        assert choose("auto", results) == "bf16"
    assert "int8 not used: top-1 agreement 50% < 90%" in caplog.text


def test_auto_serves_the_precision_closer_to_fp32_when_two_are_about_as_fast(caplog):
    close, fast = result("bf16", 0.126, cosine=0.9999), result("int8", 0.121, cosine=0.9985)
    with caplog.at_level(logging.INFO):
        assert choose("auto", {"fp32": FP32, "bf16": close, "int8": fast}) == "bf16"
    assert "int8 not used: bf16 is as fast (within 10%) and closer to fp32" in caplog.text
    clearly_faster = result("int8", 0.09, cosine=0.9985)  # 29% faster: speed decides
    assert choose("auto", {"fp32": FP32, "bf16": close, "int8": clearly_faster}) == "int8"
    failing = result("bf16", 0.126, cosine=0.9999, top1=0.5)  # as fast and closer, but it fails
    assert choose("auto", {"fp32": FP32, "bf16": failing, "int8": fast}) == "int8"
    # Closer and within 10% of int8, but only 1.05x faster than fp32: not a faster precision at all.
    barely, enough = result("bf16", 0.95, cosine=0.9999), result("int8", 0.88, cosine=0.9985)
    assert choose("auto", {"fp32": FP32, "bf16": barely, "int8": enough}) == "int8"


def test_auto_keeps_fp32_when_nothing_is_clearly_faster(caplog):
    results = {"fp32": FP32, "bf16": result("bf16", 0.95), "int8": result("int8", 1.3)}
    with caplog.at_level(logging.INFO, logger="model_store.precision"):
        assert choose("auto", results) == "fp32"
    assert "bf16 not used: only 1.05x faster than fp32" in caplog.text


@pytest.mark.parametrize(
    "failing, message",
    [
        (dict(cosine=0.9), "embedding cosine 0.9000 < 0.99"),
        (dict(probability=0.2), "a probability moved 0.2000 > 0.03"),
        (dict(calories=0.1), "calories moved 10.0% > 3%"),
    ],
)
def test_an_explicit_precision_that_fails_falls_back_with_one_line_saying_why(caplog, failing, message):
    results = {"fp32": FP32, "bf16": result("bf16", 0.5, **failing), "int8": result("int8", 0.2, **failing)}
    with caplog.at_level(logging.WARNING, logger="model_store.precision"):
        assert choose("int8", results) == "fp32"
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"FOOD101_PRECISION=int8 falls back to bf16: {message}",
        f"FOOD101_PRECISION=bf16 falls back to fp32: {message}",
    ]


def test_an_unsupported_precision_falls_back(monkeypatch, caplog):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with caplog.at_level(logging.WARNING, logger="model_store.precision"):
        assert choose("bf16", {"fp32": FP32}) == "fp32"
    assert "FOOD101_PRECISION=bf16 falls back to fp32: this CPU has no native bf16" in caplog.text


def test_candidates_are_timed_round_by_round_on_one_thread():
    calls = []

    class Recording:
        def __init__(self, name):
            self.name = name

        def __call__(self, pixels):
            calls.append((self.name, torch.get_num_threads(), len(pixels)))

    names = ("fp32", "bf16", "int8")
    seconds = precision._timed({name: Recording(name) for name in names}, torch.zeros(3, 3, 8, 8))
    assert set(seconds) == set(names) and all(value > 0 for value in seconds.values())
    timed = calls[len(names) :]  # after one warm-up call each
    # Interleaved: a slow moment of a noisy machine hits every candidate, not one.
    assert [name for name, _, _ in timed] == list(names) * precision.TIMING_ROUNDS
    assert {(threads, rows) for _, threads, rows in calls} == {(1, 1)}


def test_guard_photos_are_the_same_on_every_call():
    first, second = guard_photos(), guard_photos()
    assert len(first) == precision.GUARD_PHOTOS and first == second and len(set(first)) == len(first)


def _handler(store, tmp_path):
    return load_food101_handler(store / "food101.mar", tmp_path / "unpacked")


@pytest.mark.parametrize("chosen", ["int8", "bf16"])
def test_a_built_precision_is_served_guarded_and_part_of_the_classifier_identity(tmp_path, chosen):
    if not precision.supported(chosen)[0]:
        pytest.skip(f"{chosen} is not supported on this CPU")
    stores = {}
    for name in ("fp32", chosen):
        settings = make_settings(tmp_path / name, food101_model="demo", food101_precision=name,
                                 model_store_dir=tmp_path / name / "mar")  # fmt: skip
        identity = build_models(settings)
        stores[name] = (settings.model_store_dir, identity)
    identity = stores[chosen][1]
    assert identity["precision"] == chosen and identity["guard"][f"torch-{chosen}"]["passed"]
    # Other features: a change of precision asks for `make backfill`.
    assert identity["version"] == f"{stores['fp32'][1]['version']}:{chosen}"
    fp32, other = _handler(stores["fp32"][0], tmp_path / "a"), _handler(stores[chosen][0], tmp_path / "b")
    assert other.classifier.precision == chosen and fp32.classifier.precision == "fp32"
    if chosen == "int8":
        assert any("quantized.dynamic" in type(m).__module__ for m in other.model.modules())
        if "onednn" in torch.backends.quantized.supported_engines:  # 1.8x fbgemm's speed on AMX
            assert torch.backends.quantized.engine == "onednn"
    else:  # held in bf16, not cast from fp32 on every call (autocast: 1.8x slower on AMX)
        assert {parameter.dtype for parameter in other.model.parameters()} == {torch.bfloat16}
        # the .mar's own copy of food101_model: matched by name
        assert any(type(m).__name__ == PackedBf16Linear.__name__ for m in other.model.modules())
    batch = [{"data": bytearray(photo)} for photo in guard_photos()[:4]]
    base_embedding, base_probabilities = fp32.inference(fp32.preprocess(batch))
    embedding, probabilities = other.inference(other.preprocess(batch))
    assert torch.nn.functional.cosine_similarity(embedding, base_embedding).min() > 0.99
    assert (probabilities - base_probabilities).abs().max() < 0.03
    assert not torch.equal(embedding, base_embedding)  # really another arithmetic


@pytest.mark.parametrize("shape", [(5, 64), (2, 7, 64), (2, 3, 4, 64)])
def test_a_packed_bf16_linear_gives_the_plain_linears_outputs_exactly(shape):
    if not precision.supported("bf16")[0]:
        pytest.skip("bf16 is not supported on this CPU")
    plain = torch.nn.Linear(64, 96).bfloat16()
    packed = PackedBf16Linear(plain)
    first = torch.randn(3, 64).bfloat16()  # packed on its first call, for 3 rows
    x = torch.randn(*shape).bfloat16()
    with torch.inference_mode():
        packed(first)
        assert packed.packed is not None and packed.packed.is_mkldnn and packed.weight is None
        assert torch.equal(packed(x), plain(x))  # any row count after packing, bit for bit


def test_int8_attention_matmuls_in_bf16_stay_close_and_anything_unusual_is_left_to_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from model_store.worker.food101_model import bf16_matmul_attention

    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 4, 50, 16) for _ in range(3))
    module = torch.nn.Module()
    module.is_causal = False
    expected, _ = sdpa_attention_forward(module, query, key, value, None)
    output, _ = bf16_matmul_attention(module, query, key, value, None)
    assert output.dtype == torch.float32 and output.shape == expected.shape == (2, 50, 4, 16)
    torch.testing.assert_close(output, expected, atol=0.03, rtol=0.03)  # bf16: ~3 significant digits
    assert not torch.equal(output, expected)  # it did run in bf16
    mask = torch.zeros(2, 1, 50, 50)
    mask[..., 40:] = float("-inf")  # a masked call: transformers' own SDPA, bit for bit
    masked, _ = bf16_matmul_attention(module, query, key, value, mask)
    reference, _ = sdpa_attention_forward(module, query, key, value, mask)
    torch.testing.assert_close(masked, reference, atol=0, rtol=0)
