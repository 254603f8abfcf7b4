"""Photos that are unusual but valid (grey, CMYK, palette with alpha, 16-bit, WebP, EXIF-rotated)
go the whole request path and are seen upright (tests/test_bad_images.py: the invalid ones)."""

import asyncio
import io
import math

import pytest
from PIL import Image

from foodcal.domain.convert import nutrition_values
from tests.test_gateway import analyze, get_sample


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
