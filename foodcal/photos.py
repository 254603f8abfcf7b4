"""Validate an uploaded photo before anything is stored.

Decided by content, never by file name: JPEG, PNG or WebP only; at most 10 MB; a pixel limit that
stops decompression bombs before any pixel is decoded; EXIF orientation applied; greyscale, CMYK,
palette, 16-bit and alpha images converted to 8-bit RGB.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000  # 8000 x 5000: any real camera photo, far below a decompression bomb
MIN_SIDE_PX = 32
MODEL_MAX_SIDE_PX = 512  # what we send to the classifier: enough for its 224 px input

_SIGNATURES = {
    "JPEG": (b"\xff\xd8\xff",),
    "PNG": (b"\x89PNG\r\n\x1a\n",),
}
_KNOWN_OTHERS = {
    b"GIF8": "a GIF",
    b"II*\x00": "a TIFF",
    b"MM\x00*": "a TIFF",
    b"BM": "a BMP",
    b"%PDF": "a PDF",
    b"<svg": "an SVG",
    b"<?xm": "an XML/SVG document",
    b"<!DO": "an HTML document",
    b"<htm": "an HTML document",
}


class InvalidImage(ValueError):
    """The upload is not a photo we accept; the message says why, for a person."""


@dataclass(frozen=True)
class ValidImage:
    format: str
    width: int
    height: int
    model_input: bytes  # upright 8-bit RGB JPEG, at most MODEL_MAX_SIDE_PX on a side


def sniff_format(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for name, signatures in _SIGNATURES.items():
        if data.startswith(signatures):
            return name
    head = data[:64].lstrip().lower()
    for signature, what in _KNOWN_OTHERS.items():
        if data.startswith(signature) or head.startswith(signature.lower()):
            raise InvalidImage(f"the file is {what}, not a photo: send a JPEG, PNG or WebP image")
    raise InvalidImage("the file is not a JPEG, PNG or WebP image")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping to white.
        image = image.point(lambda value: value / 256).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # shown rotated by 90° or 270°: width and height swap


def validate_image(data: bytes) -> ValidImage:
    if not data:
        raise InvalidImage("the image is empty")
    if len(data) > MAX_BYTES:
        raise InvalidImage(
            f"the image is {len(data) / 1e6:.1f} MB; the limit is {MAX_BYTES // (1024 * 1024)} MB"
        )
    kind = sniff_format(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[kind])
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise InvalidImage(
                    f"the image is {width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels"
                )
            if getattr(image, "n_frames", 1) > 1:
                raise InvalidImage("animated images are not accepted: send a single photo")
            image.verify()  # checksums (e.g. PNG chunk CRCs) that a plain load skips
            image = Image.open(io.BytesIO(data), formats=[kind])
            if image.getexif().get(EXIF_ORIENTATION) in TRANSPOSING_ORIENTATIONS:
                width, height = height, width  # the size of the photo as shown, upright
            # JPEG can decode straight at a reduced scale: far less work than decode-then-resize.
            image.draft("RGB", (MODEL_MAX_SIDE_PX, MODEL_MAX_SIDE_PX))
            image.load()
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage("the image has too many pixels (a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise InvalidImage(f"the {kind} data is corrupt or truncated") from None
    if min(width, height) < MIN_SIDE_PX:
        raise InvalidImage(f"the image is {width}x{height} pixels; each side needs at least {MIN_SIDE_PX}")
    image = _to_rgb(ImageOps.exif_transpose(image))
    image.thumbnail((MODEL_MAX_SIDE_PX, MODEL_MAX_SIDE_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return ValidImage(kind, width, height, buffer.getvalue())
