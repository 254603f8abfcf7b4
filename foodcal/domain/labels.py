"""A ChatGPT (or reference table) label: one domain type, its protobuf and JSON forms, and the one
status enum of a sample's label. The labeler caches `Label.to_json()`; a sample keeps a label in
its `label_*` columns (foodcal/store/tables.py); services send `Label.to_proto()`."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from foodcal.domain.convert import mirrors_proto_enum, nutrition_proto, nutrition_values, public_provider
from foodcal.domain.items import FoodItem
from foodcal.v1 import common_pb2

Nutrients = tuple[float, float, float, float]


@mirrors_proto_enum(common_pb2.LabelStatus, "LABEL_STATUS_")
class LabelStatus(enum.StrEnum):
    """Where a sample's label stands; stored as the value, sent as common.proto's LabelStatus."""

    NOT_REQUESTED = "not_requested"
    PENDING = "pending"
    LABELED = "labeled"
    FAILED = "failed"
    REJECTED = "rejected"
    REFERENCE_ONLY = "reference_only"


class LabelSource(enum.StrEnum):
    CHATGPT = "chatgpt"
    REFERENCE = "reference"

    def to_proto(self) -> common_pb2.NutritionSource:
        return common_pb2.NutritionSource.Value(f"NUTRITION_SOURCE_{self.name}")

    @classmethod
    def from_proto(cls, value: int) -> LabelSource:
        name = common_pb2.NutritionSource.Name(value).removeprefix("NUTRITION_SOURCE_")
        if name not in cls.__members__:
            raise ValueError(f"a label comes from ChatGPT or the reference table, not {name}")
        return cls[name]


@dataclass(frozen=True)
class Label:
    source: LabelSource
    dish: str
    portion_g: float
    nutrients: Nutrients | None  # None when rejected: no numbers, never training data
    confidence: float  # [0, 1]
    provider: str  # `openai`, `openai-compatible` or `foodcal`: never the endpoint
    model: str
    flags: tuple[str, ...] = ()
    items: tuple[FoodItem, ...] = ()
    rejection_reason: str = ""  # set when ChatGPT refused or saw no food

    @property
    def rejected(self) -> bool:
        return bool(self.rejection_reason)

    def to_proto(self) -> common_pb2.Label:
        return common_pb2.Label(
            source=self.source.to_proto(),
            dish=self.dish,
            portion_g=self.portion_g,
            nutrition=nutrition_proto(self.nutrients),
            confidence=self.confidence,
            provider=public_provider(self.provider),
            model=self.model,
            flags=self.flags,
            items=[item.to_proto() for item in self.items],
        )

    @classmethod
    def from_proto(cls, message: common_pb2.Label, rejection_reason: str = "") -> Label:
        """`rejection_reason`: the LabelMealResponse's, which the Label message does not carry."""
        return cls(
            source=LabelSource.from_proto(message.source),
            dish=message.dish,
            portion_g=message.portion_g,
            nutrients=nutrition_values(message.nutrition) if message.HasField("nutrition") else None,
            confidence=message.confidence,
            provider=message.provider,
            model=message.model,
            flags=tuple(message.flags),
            items=tuple(FoodItem.from_proto(item) for item in message.items),
            rejection_reason=rejection_reason,
        )

    def to_json(self) -> dict:
        return {
            "source": str(self.source),
            "dish": self.dish,
            "portion_g": self.portion_g,
            "nutrients": list(self.nutrients) if self.nutrients is not None else None,
            "confidence": self.confidence,
            "provider": self.provider,
            "model": self.model,
            "flags": list(self.flags),
            "items": [item.to_json() for item in self.items],
            "rejection_reason": self.rejection_reason,
        }

    @classmethod
    def from_json(cls, data: dict) -> Label:
        """Also reads the cache's older entries, which lack the fields added since."""
        nutrients = data.get("nutrients")
        return cls(
            source=LabelSource(data["source"]),
            dish=data["dish"],
            portion_g=float(data.get("portion_g", 0.0)),
            nutrients=tuple(float(v) for v in nutrients) if nutrients else None,  # type: ignore[arg-type]
            confidence=float(data.get("confidence", 0.0)),
            provider=data.get("provider", ""),
            model=data["model"],
            flags=tuple(data.get("flags", ())),
            items=tuple(FoodItem.from_json(item) for item in data.get("items", ())),
            rejection_reason=data.get("rejection_reason", ""),
        )
