"""Small conversions between stored values and protobuf messages, shared by every service."""

from __future__ import annotations

from datetime import datetime

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
