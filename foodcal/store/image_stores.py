"""Which image store a service writes to: the one place that knows both kinds."""

from __future__ import annotations

from pathlib import Path

from foodcal.store.images import ImageStore
from foodcal.store.s3_images import S3ImageStore


def open_image_store(settings) -> ImageStore | S3ImageStore:
    """`IMAGE_STORE_URL=s3://…` selects S3; anything else is the local `UPLOAD_DIR`."""
    url = settings.image_store_url
    if url.startswith("s3://"):
        return S3ImageStore(url, settings.s3_endpoint_url)
    if url and not url.startswith("file://"):
        raise ValueError("IMAGE_STORE_URL must start with s3:// or file://")
    return ImageStore(Path(url.removeprefix("file://")) if url else settings.upload_dir)
