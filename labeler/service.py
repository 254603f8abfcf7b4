"""LabelerService: translates between protobuf and `Labeler`."""

from __future__ import annotations

import asyncio
import io

import grpc
from PIL import Image, UnidentifiedImageError

from foodcal.notes import InvalidNote, clean_note
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
}


def _verify(image: bytes) -> None:
    Image.open(io.BytesIO(image)).verify()


class LabelerServicer(labeler_pb2_grpc.LabelerServiceServicer):
    def __init__(self, labeler: Labeler) -> None:
        self.labeler = labeler

    async def LabelMeal(self, request, context):
        if not request.image:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "image is empty")
        try:
            await asyncio.to_thread(_verify, request.image)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "image is not a readable picture")
        hints = [(hint.label, hint.probability) for hint in request.dish_hints]
        try:
            note = clean_note(request.note)
        except InvalidNote as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        try:
            sha256, result = await self.labeler.label(request.image, hints, note)
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
