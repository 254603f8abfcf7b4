"""The photos of one plate in an AnalyzeMeal request: checked (headers), hashed once, staged while
the model runs, and removed again when the request fails."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from foodcal.store.images import Staged, sha256_of
from model_store.worker.photos import ValidImage, validate_image

# A photo up to this size is hashed on the event loop (~0.5 ms at most here): a thread hop costs
# more. On a 2-vCPU VM whose idle cores halt, each hop after an idle moment added 4-5 ms to
# AnalyzeMeal (measured); hashing a 12 MP photo (~2 MB, ~1.2 ms) still runs in a thread.
INLINE_HASH_BYTES = 1024 * 1024


def checked(image: bytes, sha256: str | None) -> tuple[ValidImage, str]:
    """The photo's headers checked (TorchServe decodes it), and its sha256."""
    return validate_image(image), sha256 or sha256_of(image)


def discard(staging: asyncio.Future) -> None:
    """A staging's done-callback: its photo, if it was written, is removed."""
    if not staging.cancelled() and staging.exception() is None:
        staging.result().discard()


async def discarded(staging: asyncio.Future) -> None:
    """After a failed request: the staged photo removed before the caller hears of the failure."""
    await asyncio.wait([staging])
    discard(staging)


MAX_MORE_IMAGES = 3  # four photos of one plate at most


class InvalidAngles(ValueError):
    """Other angles that cannot go with the photo (too many, or a photo sent twice)."""


@dataclass
class Angles:
    """A plate's other photos: their sha256s, their stagings, their bytes (for the classifier)."""

    sha256s: list[str]
    stagings: list[asyncio.Future]
    images: tuple[bytes, ...]

    async def staged(self) -> list[Staged]:
        return [await staging for staging in self.stagings]


def other_angles(images: tuple[bytes, ...], first_sha256: str) -> list[tuple[bytes, str]]:
    """Each other angle checked (headers) and hashed; the same photo twice is refused."""
    if len(images) > MAX_MORE_IMAGES:
        raise InvalidAngles(
            f"more_images: at most {MAX_MORE_IMAGES} more photos of the plate (got {len(images)})"
        )
    hashed = [(image, checked(image, None)[1]) for image in images]
    hashes = [first_sha256] + [sha for _, sha in hashed]
    if len(set(hashes)) != len(hashes):
        raise InvalidAngles("more_images: the same photo twice; send each angle once")
    return hashed
