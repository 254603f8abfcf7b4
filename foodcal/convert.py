"""Small conversions between stored values and protobuf messages, shared by every service."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

from google.protobuf.timestamp_pb2 import Timestamp

from foodcal.nutrition import NUTRIENTS
from foodcal.v1 import common_pb2


def nutrition_proto(values: tuple[float, ...] | list[float] | None) -> common_pb2.Nutrition | None:
    if values is None:
        return None
    return common_pb2.Nutrition(**dict(zip(NUTRIENTS, values, strict=True)))


def nutrition_values(message: common_pb2.Nutrition) -> tuple[float, float, float, float]:
    return tuple(getattr(message, name) for name in NUTRIENTS)  # type: ignore[return-value]


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def public_provider(endpoint: str | None) -> str:
    """Who answered, as a client may learn it: `openai`, `openai-compatible` or our own name, never
    the labeler's endpoint (OPENAI_BASE_URL can name an internal host). Labels stored before this
    hold the URL itself: they are mapped the same way on the way out."""
    if not endpoint:
        return "openai"
    if "://" not in endpoint:
        return endpoint
    return "openai" if urlsplit(endpoint).hostname == "api.openai.com" else "openai-compatible"
