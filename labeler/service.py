"""LabelerService: translates between protobuf and `Labeler`."""

from __future__ import annotations

import asyncio
import io

import grpc
from PIL import Image, UnidentifiedImageError

from foodcal.domain.notes import InvalidNote, clean_note
from foodcal.store.images import is_sha256, sha256_of
from foodcal.v1 import common_pb2, labeler_pb2, labeler_pb2_grpc
from labeler.chatgpt import LabelFailure
from labeler.labeling import Labeler

ERROR_METADATA_KEY = "foodcal-label-error"
_CODES = {
    "rate_limited": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "invalid_answer": grpc.StatusCode.INTERNAL,
    "invalid_request": grpc.StatusCode.INTERNAL,
    "auth_failed": grpc.StatusCode.FAILED_PRECONDITION,
    "image_missing": grpc.StatusCode.DATA_LOSS,  # the image store has no photo with that sha256
}


MAX_MORE_ANGLES = 3  # four photos of one plate at most


def _checked_sha256(image: bytes) -> str:
    """A direct caller's bytes: readable as a picture (headers only), then hashed, once."""
    Image.open(io.BytesIO(image)).verify()
    return sha256_of(image)


class LabelerServicer(labeler_pb2_grpc.LabelerServiceServicer):
    def __init__(self, labeler: Labeler) -> None:
        self.labeler = labeler

    async def _photo(self, request, context) -> tuple[str, bytes | None]:
        """(sha256, the bytes when the caller sent them; else the labeler reads the image store)."""
        if request.WhichOneof("photo") == "image_sha256":
            if not is_sha256(request.image_sha256):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "image_sha256 must be 64 lowercase hex characters"
                )
            return request.image_sha256, None
        if not request.image:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "send the photo: image or image_sha256")
        try:
            return await asyncio.to_thread(_checked_sha256, request.image), request.image
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "image is not a readable picture")

    async def LabelMeal(self, request, context):
        sha256, image = await self._photo(request, context)
        hints = [(hint.label, hint.probability) for hint in request.dish_hints]
        more = tuple(request.more_image_sha256s)
        if len(more) > MAX_MORE_ANGLES or not all(is_sha256(other) for other in more):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"more_image_sha256s: at most {MAX_MORE_ANGLES}, each 64 lowercase hex characters",
            )
        try:
            note = clean_note(request.note)
        except InvalidNote as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        try:
            result = await self.labeler.label(sha256, hints, note, image=image, more=more)
        except LabelFailure as failure:
            context.set_trailing_metadata(((ERROR_METADATA_KEY, failure.reason),))
            await context.abort(_CODES.get(failure.reason, grpc.StatusCode.INTERNAL), str(failure))
        except (ValueError, KeyError) as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error).strip("'\""))
        usage = result.usage
        return labeler_pb2.LabelMealResponse(
            label=result.label.to_proto(),
            usage=common_pb2.TokenUsage(
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                total_tokens=usage.total_tokens,
                estimated_cost_usd=usage.cost_usd,
            ),
            cached=result.cached,
            image_sha256=sha256,
            rejected=result.label.rejected,
            rejection_reason=result.label.rejection_reason,
        )
