"""Seeded synthetic photos, the same pixels on every machine: the accuracy guard's plates, and the
photo-like pictures that static int8 is calibrated on and a confident head is fitted to.

The two sets never share a photo: a quantisation calibrated (or a head fitted) on the guard's own
photos would flatter the guard."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

GUARD_SEED, CALIBRATION_SEED = 101, 2024


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def plates(count: int, seed: int = GUARD_SEED) -> list[bytes]:
    """Shapes and colours on gradients, several sizes and aspect ratios."""
    rng = np.random.default_rng(seed)
    photos = []
    for index in range(count):
        width, height = int(rng.integers(160, 640)), int(rng.integers(160, 640))
        base = rng.integers(0, 256, size=3)
        ramp = np.linspace(0, 1, width)[None, :, None] * rng.integers(-120, 120, size=3)
        pixels = np.clip(base + ramp + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 7))):
            x0, y0 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
            box = (x0, y0, x0 + int(rng.integers(10, width // 2)), y0 + int(rng.integers(10, height // 2)))
            colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
            (draw.ellipse if index % 2 else draw.rectangle)(box, fill=colour)
        photos.append(_jpeg(image))
    return photos


def photo_like(count: int, seed: int = CALIBRATION_SEED) -> list[bytes]:
    """Closer to a camera's statistics than `plates`: smooth lighting, blurred food-sized blobs
    with soft edges, sensor noise, JPEG at a phone's quality; varied sizes and aspect ratios."""
    rng = np.random.default_rng(seed)
    photos = []
    for _ in range(count):
        width, height = int(rng.integers(240, 720)), int(rng.integers(240, 720))
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        phase, period = rng.uniform(0, 6.3, 3), rng.uniform(80, 400, 3)
        light = [rng.uniform(60, 190) + rng.uniform(20, 60) * np.sin((x + y * k) / p + f)
                 for k, p, f in zip((0.3, 1.0, 0.6), period, phase, strict=True)]  # fmt: skip
        image = Image.fromarray(np.clip(np.stack(light, -1), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(6, 30))):
            cx, cy, r = (
                rng.integers(0, width),
                rng.integers(0, height),
                rng.integers(8, max(width, height) // 3),
            )
            draw.ellipse(
                (cx - r, cy - r, cx + r, cy + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3))
            )
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 4))))
        noisy = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(2, 8), (height, width, 3))
        photos.append(
            _jpeg(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), int(rng.integers(75, 95)))
        )
    return photos
