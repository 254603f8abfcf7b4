"""Bad images: each a clear INVALID_ARGUMENT, nothing stored, the gateway still healthy."""

import io
import os
import struct
import zlib

import grpc
import pytest
from PIL import Image

from foodcal.v1 import gateway_pb2
from tests.conftest import auth, photo


def _encode(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _png_with_bad_crc() -> bytes:
    data = bytearray(_encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG"))
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    crc_at = idat + 4 + length
    data[crc_at : crc_at + 4] = struct.pack(">I", zlib.crc32(b"garbage"))
    return bytes(data)


def _animated_gif() -> bytes:
    frames = [Image.new("P", (64, 64), i) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def _animated_png() -> bytes:
    frames = [Image.new("RGB", (64, 64), (i * 50, 0, 0)) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def _multipage_tiff() -> bytes:
    frames = [Image.new("RGB", (64, 64)) for _ in range(2)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def _bomb() -> bytes:
    return _encode(Image.new("1", (20000, 20000)), "PNG")  # a few KB that decode to 400 megapixels


_JPEG = photo()
BAD_IMAGES = {
    "empty": b"",
    "random-bytes": os.urandom(4096),
    "text": b"just some text, not a picture\n" * 20,
    "html": b"<!DOCTYPE html><html><script>alert(1)</script></html>",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    "svg-xml": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>',
    "pdf": b"%PDF-1.4\n%...",
    "truncated-jpeg": _JPEG[: len(_JPEG) // 3],
    "corrupt-jpeg-header": _JPEG[:3] + b"\x00" * 40 + _JPEG[43:],
    "png-bad-crc": _png_with_bad_crc(),
    "one-pixel": _encode(Image.new("RGB", (1, 1)), "PNG"),
    "tiny": _encode(Image.new("RGB", (8, 8)), "JPEG"),
    "bomb": _bomb(),
    "animated-gif": _animated_gif(),
    "animated-png": _animated_png(),
    "multipage-tiff": _multipage_tiff(),
    "bmp": _encode(Image.new("RGB", (64, 64)), "BMP"),
    "gif-single": _encode(Image.new("P", (64, 64)), "GIF"),
    "png-header-only": b"\x89PNG\r\n\x1a\n",
    "riff-not-webp": b"RIFF\x00\x00\x00\x00WAVEfmt ",
    "over-10mb-inside-limit": b"\xff\xd8\xff" + os.urandom(10 * 1024 * 1024 + 10),
}


async def test_each_bad_image_is_invalid_argument_with_nothing_stored(system):
    app = await system(use_chatgpt=False)
    for name, data in BAD_IMAGES.items():
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await app.gateway.AnalyzeMeal(
                gateway_pb2.AnalyzeMealRequest(image=data, filename="photo.jpg"), metadata=auth(), timeout=30
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert len(raised.value.details()) > 10, name
    assert app.sample_count() == 0
    assert app.upload_files == []
    response = await app.gateway.AnalyzeMeal(
        gateway_pb2.AnalyzeMealRequest(image=photo()), metadata=auth(), timeout=30
    )
    assert response.sample_id  # still healthy after all of that


async def test_upload_over_the_message_limit_is_refused_before_being_read(system):
    app = await system(use_chatgpt=False)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await app.gateway.AnalyzeMeal(
            gateway_pb2.AnalyzeMealRequest(image=b"\xff\xd8\xff" + b"\x00" * (50 * 1024 * 1024)),
            metadata=auth(),
        )
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert app.sample_count() == 0
