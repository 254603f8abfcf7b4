"""The whole request path with real processes around a real TorchServe and the OpenAI stub."""

import asyncio
import io
import math
import os
import time

import pytest
from PIL import Image

from foodcal.domain.convert import nutrition_values
from foodcal.v1 import common_pb2, gateway_pb2
from tests.conftest import auth, photo
from tests.openai_stub import answer, error

NS = common_pb2


async def analyze(system, image=None, filename="meal.jpg"):
    request = gateway_pb2.AnalyzeMealRequest(image=image or photo(), filename=filename)
    return await system.gateway.AnalyzeMeal(request, metadata=auth(), timeout=60)


async def get_sample(system, sample_id):
    return (
        await system.gateway.GetSample(gateway_pb2.GetSampleRequest(sample_id=sample_id), metadata=auth())
    ).sample


async def stats(system):
    return await system.gateway.GetStats(gateway_pb2.GetStatsRequest(), metadata=auth())


async def wait_for_status(system, sample_id, status, timeout_s=20.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        sample = await get_sample(system, sample_id)
        if sample.label_status == status:
            return sample
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"label stayed {NS.LabelStatus.Name(sample.label_status)}: {sample.label_error}"
            )
        await asyncio.sleep(0.2)


async def wait_for_attempts(system, sample_id, attempts, timeout_s=20.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (sample := await get_sample(system, sample_id)).label_attempts < attempts:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{sample.label_attempts} label attempts, waited for {attempts}")
        await asyncio.sleep(0.1)
    return sample


async def test_chatgpt_now_shows_its_numbers_and_stores_ours_beside(system, openai_stub):
    app = await system()
    response = await analyze(app)
    assert response.source == NS.NUTRITION_SOURCE_CHATGPT
    assert response.nutrition.calories_kcal == 650.0
    assert response.label_status == NS.LABEL_STATUS_LABELED
    assert response.own_prediction.calories_kcal > 0 and response.model_versions.nutrition == 0
    assert response.model_versions.classifier_is_demo and response.model_versions.classifier.startswith(
        "demo@"
    )
    assert response.model_versions.labeler_model == "gpt-4o-mini"
    assert len(response.dishes) == 5 and response.chatgpt_label.dish == "margherita pizza"
    listed = await app.gateway.ListSamples(gateway_pb2.ListSamplesRequest(), metadata=auth())
    (sample,) = listed.samples
    assert sample.sample_id == response.sample_id
    assert sample.difference.calories_kcal == pytest.approx(sample.own_prediction.calories_kcal - 650.0)
    totals = await stats(app)
    assert (totals.total_samples, totals.training_data_samples, totals.chatgpt_calls) == (1, 1, 1)
    assert totals.usage.total_tokens == 160 and totals.usage.estimated_cost_usd > 0
    assert totals.served.nutrition == 0 and totals.served.classifier_is_demo
    assert openai_stub.calls == 1 and not openai_stub.problems


async def test_own_model_first_then_chatgpt_label_arrives_in_background(system, openai_stub):
    app = await system(use_own_model_instead_chatgpt=True)
    response = await analyze(app)
    assert response.source == NS.NUTRITION_SOURCE_REFERENCE  # v0 is the reference table
    assert response.nutrition == response.own_prediction
    assert response.label_status == NS.LABEL_STATUS_PENDING
    sample = await wait_for_status(app, response.sample_id, NS.LABEL_STATUS_LABELED)
    assert sample.chatgpt_label.nutrition.calories_kcal == 650.0
    assert (await stats(app)).training_data_samples == 1


async def test_chatgpt_off_makes_no_call(system, openai_stub):
    app = await system(use_chatgpt=False)
    response = await analyze(app)
    assert response.label_status == NS.LABEL_STATUS_NOT_REQUESTED
    assert response.source == NS.NUTRITION_SOURCE_REFERENCE
    assert not response.HasField("chatgpt_label")
    await asyncio.sleep(0.5)
    assert openai_stub.calls == 0
    assert (await stats(app)).training_data_samples == 0


async def test_no_openai_key_labels_from_reference_table_never_as_training_data(system, openai_stub):
    app = await system(openai_api_key="")
    response = await analyze(app)
    assert response.label_status == NS.LABEL_STATUS_REFERENCE_ONLY
    assert response.source == NS.NUTRITION_SOURCE_REFERENCE
    assert response.chatgpt_label.source == NS.NUTRITION_SOURCE_REFERENCE
    assert (await stats(app)).training_data_samples == 0 and openai_stub.calls == 0


async def test_labeler_failure_still_answers_and_label_arrives_after_recovery(system, openai_stub):
    openai_stub.reset(default=error(500, "down"))
    app = await system()
    response = await analyze(app)
    assert response.label_status == NS.LABEL_STATUS_PENDING
    assert response.source == NS.NUTRITION_SOURCE_REFERENCE and response.nutrition.calories_kcal > 0
    failed = await wait_for_attempts(app, response.sample_id, 2)  # the worker retried, and failed again
    assert failed.label_status == NS.LABEL_STATUS_PENDING and failed.label_error == "unavailable"
    openai_stub.reset()  # OpenAI is back
    sample = await wait_for_status(app, response.sample_id, NS.LABEL_STATUS_LABELED)
    assert sample.label_attempts >= 2 and sample.chatgpt_label.nutrition.calories_kcal == 650.0
    assert openai_stub.calls == 1  # exactly one successful label, none duplicated
    assert (await stats(app)).training_data_samples == 1


async def test_labels_pending_when_gateway_stops_complete_after_restart(system, openai_stub):
    app = await system(services=("gateway",), use_own_model_instead_chatgpt=True)  # labeler down
    ids = [(await analyze(app, photo(color=(i * 40, 90, 30)))).sample_id for i in range(3)]
    await app.servers["gateway"].stop(0)
    again = await system(
        db_url=app.settings.database_url,
        gateway_port=app.settings.gateway_port,
        labeler_port=app.settings.labeler_port,
        labeler_address=app.settings.labeler_address,
        use_own_model_instead_chatgpt=True,
        services=("labeler", "gateway"),
    )
    for sample_id in ids:
        await wait_for_status(again, sample_id, NS.LABEL_STATUS_LABELED)
    assert openai_stub.calls == 3


async def test_not_food_is_recorded_without_numbers(system, openai_stub):
    openai_stub.reset(
        answer(is_food=False, dish="keyboard", calories_kcal=0.0, proteins_g=0.0, fats_g=0.0, carbs_g=0.0)
    )
    app = await system()
    response = await analyze(app)
    assert response.label_status == NS.LABEL_STATUS_REJECTED
    assert response.source == NS.NUTRITION_SOURCE_REFERENCE  # our numbers, not invented ones
    sample = await get_sample(app, response.sample_id)
    assert not sample.chatgpt_label.HasField("nutrition") and sample.label_error == "not_food"
    totals = await stats(app)
    assert totals.rejected_labels == 1 and totals.training_data_samples == 0


async def test_duplicate_photo_is_one_file_and_paid_once(system, openai_stub):
    app = await system()
    first, second = await analyze(app), await analyze(app)
    assert first.sample_id != second.sample_id
    assert not first.duplicate_image and second.duplicate_image
    assert len(app.upload_files) == 1
    assert openai_stub.calls == 1
    assert (await stats(app)).chatgpt_cache_hits == 1


async def test_duplicate_is_decided_by_samples_not_by_an_orphan_image_in_the_store(system):
    from foodcal.store import open_image_store

    app = await system(use_chatgpt=False)
    open_image_store(app.settings).put(photo())  # e.g. left by a request whose database write failed
    first, second = await analyze(app), await analyze(app)
    assert not first.duplicate_image  # no earlier sample of this photo
    assert second.duplicate_image
    assert len(app.upload_files) == 1


async def test_a_gateway_starting_sweeps_photos_a_dead_process_left_staged(system, tmp_path):
    """Killed between staging a photo and publishing it, a gateway leaves the photo under no name;
    the next gateway to start removes it."""
    from foodcal.store import ImageStore
    from foodcal.store.images import INCOMING_MAX_AGE_S

    left = ImageStore(tmp_path / "uploads").stage(photo())  # make_settings' upload_dir
    long_ago = time.time() - INCOMING_MAX_AGE_S - 60
    os.utime(left.incoming, (long_ago, long_ago))
    app = await system(use_chatgpt=False)
    assert not left.incoming.exists()
    await analyze(app)
    assert len(app.upload_files) == 1  # the request's own photo, published


def _image(mode, size=(200, 150), fmt="PNG", **save):
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _exif_rotated():
    image = Image.new("RGB", (300, 100), (255, 0, 0))
    image.paste((0, 0, 255), (150, 0, 300, 100))  # red | blue: a rotation changes what the model sees
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "image",
    [
        _image("L", fmt="JPEG"),
        _image("CMYK", fmt="JPEG"),
        _image("P", fmt="PNG", transparency=0),
        _image("RGBA"),
        _image("I;16"),
        _image("RGB", fmt="WEBP"),
        _exif_rotated(),
    ],
    ids=["grey", "cmyk", "palette-alpha", "rgba", "16-bit", "webp", "exif-rotated"],
)
async def test_unusual_but_valid_images_are_accepted(system, image):
    app = await system(use_chatgpt=False)
    response = await analyze(app, image, filename="no-extension")
    probabilities = [d.probability for d in response.dishes]
    assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True)
    assert all(0 < p <= 1 for p in probabilities) and sum(probabilities) <= 1 + 1e-5
    assert all(math.isfinite(v) and v > 0 for v in nutrition_values(response.nutrition))
    assert (await get_sample(app, response.sample_id)).dishes == response.dishes


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def test_exif_orientation_is_applied(system):
    from PIL import ImageOps

    from model_store.worker.photos import decode_for_model, validate_image

    valid = validate_image(_exif_rotated())
    assert (valid.width, valid.height) == (100, 300)  # portrait after applying orientation 6
    assert decode_for_model(_exif_rotated()).size == (100, 300)  # as the classifier sees it
    app = await system(use_chatgpt=False)
    decoded = Image.open(io.BytesIO(_exif_rotated()))
    decoded.load()
    rotated, as_stored, upright = await asyncio.gather(
        analyze(app, _exif_rotated()),
        analyze(app, _png(decoded)),  # the same pixels, sideways, without the EXIF tag
        analyze(app, _png(ImageOps.exif_transpose(decoded))),  # turned upright by hand
    )

    def dishes(response):
        return [(d.label, round(d.probability, 5)) for d in response.dishes]

    assert dishes(rotated) == dishes(upright)  # the classifier saw the photo upright
    assert dishes(rotated) != dishes(as_stored)  # and orientation does change what it sees
