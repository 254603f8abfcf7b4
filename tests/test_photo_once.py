"""The photo travels once and is hashed once; the classifier gets a reduced, upright copy."""

import hashlib
import io

import grpc
import pytest
from PIL import Image
from sqlmodel import select

import labeler.__main__ as labeler_main
import labeler.service as labeler_service
from foodcal.store import ImageStore, LabelCache, Sample
from foodcal.store.images import sha256_of
from foodcal.v1 import gateway_pb2, labeler_pb2, labeler_pb2_grpc
from labeler.service import ERROR_METADATA_KEY, LabelerServicer
from model_store.worker.photos import (
    MODEL_MAX_LONG_SIDE_PX,
    MODEL_SHRUNK_SHORT_SIDE_PX,
    decode_for_model,
    validate_image,
)
from tests.conftest import API_TOKEN, INTERNAL_TOKEN, auth, photo, start_service
from tests.fixtures_labeler import chatgpt_settings
from tests.test_servicers import Context, aborted

ORIENTATION_ROTATE_90 = 6


def camera_photo(size=(4000, 3000), fmt="JPEG", rotated=True) -> bytes:
    """Large, with detail at every scale (not flat colour), stored sideways like a phone's."""
    gradient = Image.linear_gradient("L").resize(size)
    image = Image.merge("RGB", (gradient, gradient.rotate(90, expand=False), Image.effect_noise(size, 40)))
    exif = Image.Exif()
    if rotated:
        exif[0x0112] = ORIENTATION_ROTATE_90
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, exif=exif.tobytes(), **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@pytest.mark.parametrize("bad", ["abc", "A" * 64, "0" * 64 + "\n", "../" * 21 + "x", "g" * 64])
async def test_the_labeler_refuses_a_malformed_sha256(bad):
    request = labeler_pb2.LabelMealRequest(image_sha256=bad)
    error = await aborted(LabelerServicer(labeler=None).LabelMeal(request, Context()))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "image_sha256" in error.details


def test_the_classifier_decodes_an_upright_copy_no_smaller_than_its_processor_needs():
    for short_side in (224, 256):  # a ViT's 224; 256 = 224 / 0.875, a ConvNeXt's resize
        for data, upright in (
            (camera_photo(), (3000, 4000)),
            (camera_photo((1280, 960), "PNG", False), (1280, 960)),
        ):
            valid = validate_image(data)
            seen = decode_for_model(data, short_side)
            assert (valid.width, valid.height) == upright  # the original's size, as shown
            assert seen.mode == "RGB"
            # never below what the processor resizes to, and not far above it (JPEG: DCT scaling)
            assert short_side <= min(seen.size) <= max(2 * short_side - 1, MODEL_SHRUNK_SHORT_SIDE_PX)
            assert (seen.width < seen.height) == (upright[0] < upright[1])  # turned upright first
    strip = decode_for_model(photo(size=(40, 9000)))
    assert max(strip.size) <= MODEL_MAX_LONG_SIDE_PX


@pytest.fixture
async def labeler_by_hash(tmp_path, stub, db, channel_to, monkeypatch):
    """A labeler with ChatGPT (the stub); its image store; every sha256 it computes, counted."""
    hashed: list[int] = []
    monkeypatch.setattr(
        labeler_service, "sha256_of", lambda data: hashed.append(len(data)) or sha256_of(data)
    )
    settings = chatgpt_settings(tmp_path, stub, openai_max_retries=0)
    server = await start_service(labeler_main, settings, db)
    yield (
        labeler_pb2_grpc.LabelerServiceStub(channel_to(server.port)),
        ImageStore(settings.upload_dir),
        hashed,
    )
    await server.stop(0)


async def test_a_photo_sent_by_sha256_is_read_from_the_store_only_without_a_cached_label(
    labeler_by_hash, stub
):
    labeler, images, hashed = labeler_by_hash
    stored = images.put(camera_photo())
    request = labeler_pb2.LabelMealRequest(image_sha256=stored.sha256)
    request.dish_hints.add(label="pizza", probability=0.6)
    metadata = auth(INTERNAL_TOKEN)
    first = await labeler.LabelMeal(request, metadata=metadata, timeout=30)
    assert first.image_sha256 == stored.sha256 and not first.cached and stub.calls == 1
    assert not stub.problems  # a downscaled JPEG without EXIF reached ChatGPT
    images.path_for(stored.sha256).unlink()  # the cached label needs no photo
    second = await labeler.LabelMeal(request, metadata=metadata, timeout=30)
    assert second.cached and second.label.nutrition == first.label.nutrition and stub.calls == 1
    assert hashed == []  # the given sha256 is the key: nothing hashed again
    missing = labeler_pb2.LabelMealRequest(image_sha256="0" * 64, dish_hints=request.dish_hints)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await labeler.LabelMeal(missing, metadata=metadata, timeout=30)
    assert raised.value.code() == grpc.StatusCode.DATA_LOSS and stub.calls == 1
    assert dict(raised.value.trailing_metadata())[ERROR_METADATA_KEY] == "image_missing"


async def test_photo_bytes_from_a_direct_caller_are_hashed_once(labeler_by_hash):
    labeler, _, hashed = labeler_by_hash
    data = photo(color=(10, 200, 30))
    request = labeler_pb2.LabelMealRequest(image=data)
    request.dish_hints.add(label="pizza", probability=0.6)
    response = await labeler.LabelMeal(request, metadata=auth(INTERNAL_TOKEN), timeout=30)
    assert response.image_sha256 == hashlib.sha256(data).hexdigest() and hashed == [len(data)]


@pytest.mark.parametrize("request_id", ["", "retry-me-1"])
async def test_analyze_meal_hashes_the_photo_once_and_the_labeler_reads_the_store(
    system, monkeypatch, request_id
):
    import foodcal.store.images as images_module
    import gateway.analyze
    import gateway.idempotency
    import gateway.plate_photos

    data = camera_photo()
    hashed: list[str] = []

    def counting(data_: bytes) -> str:
        hashed.append(sha256_of(data_))
        return hashed[-1]

    for module in (images_module, gateway.plate_photos, gateway.idempotency, labeler_service):
        monkeypatch.setattr(module, "sha256_of", counting)
    sent = []
    real = labeler_service.LabelerServicer._photo

    async def photo_of(self, request, context):
        sent.append((request.WhichOneof("photo"), request.ByteSize()))
        return await real(self, request, context)

    monkeypatch.setattr(labeler_service.LabelerServicer, "_photo", photo_of)
    app = await system()
    request = gateway_pb2.AnalyzeMealRequest(image=data, request_id=request_id)
    response = await app.gateway.AnalyzeMeal(request, metadata=auth(API_TOKEN), timeout=60)
    assert response.chatgpt_label.nutrition.calories_kcal == 650.0  # the stub's answer
    original = hashlib.sha256(data).hexdigest()
    assert hashed == [original]  # once, for the store, the request id and the labeler's cache
    ((kind, size),) = sent
    assert kind == "image_sha256" and size < 200  # the hash and hints travel, never the photo
    with app.db.session() as session:
        assert session.exec(select(Sample.image_sha256)).all() == [original]
        assert session.exec(select(LabelCache.image_sha256)).all() == [original]


async def test_the_reduced_photo_gets_the_top_dish_the_original_gets(system, torchserve):
    app = await system(use_chatgpt=False)
    for data in (camera_photo(), camera_photo((1280, 960)), camera_photo((2400, 1800), "PNG", False)):
        response = await app.gateway.AnalyzeMeal(
            gateway_pb2.AnalyzeMealRequest(image=data), metadata=auth(API_TOKEN), timeout=60
        )
        on_original = await torchserve.client.classify(data)  # the handler decodes the full photo
        assert response.dishes[0].label == on_original.dishes[0][0]


def test_the_decode_size_is_what_each_processor_resizes_to():
    from types import SimpleNamespace

    from model_store.worker.food101_model import input_short_side

    def processor(crop_pct=None, **size):
        return SimpleNamespace(size=size, crop_pct=crop_pct)

    assert input_short_side(processor(height=224, width=224)) == 224  # ViT, BEiT, EfficientNet
    assert input_short_side(processor(height=384, width=256)) == 256
    assert input_short_side(processor(0.875, shortest_edge=224)) == 256  # ConvNeXt: 224 / 0.875
    assert input_short_side(processor(0.875, shortest_edge=384)) == 384  # ConvNeXt at 384: no crop
    assert input_short_side(processor(shortest_edge=256)) == 256  # MobileNet, MobileViT
    assert input_short_side(processor(longest_edge=1333)) == 256  # unknown: the safe default
