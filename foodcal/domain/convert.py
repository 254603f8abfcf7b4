"""Small conversions between stored values and protobuf messages, shared by every service."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

from google.protobuf.timestamp_pb2 import Timestamp

from foodcal.domain.nutrition import NUTRIENTS
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


def mirrors_proto_enum(proto_enum, prefix: str):
    """Class decorator: a Python enum whose member names are a protobuf enum's names without
    `prefix` (every one but UNSPECIFIED), given `to_proto()` and `from_proto()` by name. Checked on
    import, so the two enums cannot drift apart and no hand-written map can go stale."""

    def decorate(cls):
        names = proto_enum.DESCRIPTOR.values_by_name
        expected = {name.removeprefix(prefix) for name in names} - {"UNSPECIFIED"}
        if expected != set(cls.__members__):
            raise TypeError(
                f"{cls.__name__} {sorted(cls.__members__)} != {proto_enum.DESCRIPTOR.name} {sorted(expected)}"
            )

        def to_proto(self) -> int:
            return proto_enum.Value(prefix + self.name)

        def from_proto(enum_cls, value: int):
            """ValueError for UNSPECIFIED or a number this enum does not know."""
            name = proto_enum.Name(value).removeprefix(prefix)
            if name not in enum_cls.__members__:
                raise ValueError(f"{proto_enum.DESCRIPTOR.name} {value} names no {enum_cls.__name__}")
            return enum_cls[name]

        cls.to_proto, cls.from_proto = to_proto, classmethod(from_proto)
        return cls

    return decorate
