"""A training run's parameters: the one shape between the protobuf messages and the loop.

StartTrainingRun's request (the gateway's twin is forwarded by its wire bytes) has optional fields:
an unset one takes the default here, the only place defaults are written. The run stores
`as_dict()` (its JSON column); the answer and a stored run's message carry `to_proto()`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from foodcal.v1 import common_pb2, trainer_pb2


@dataclass
class TrainingParameters:
    epochs: int = 20
    batch_size: int = 8
    learning_rate: float = 0.001
    weight_decay: float = 0.0001
    patience: int = 0  # early-stopping patience in epochs; 0 = run every epoch
    hidden_size: int = 256

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.epochs <= 1000, "epochs must be 1 to 1000"),
            (1 <= self.batch_size <= 4096, "batch_size must be 1 to 4096"),
            (
                math.isfinite(self.learning_rate) and 0 < self.learning_rate <= 1,
                "learning_rate must be in (0, 1]",
            ),
            (
                math.isfinite(self.weight_decay) and 0 <= self.weight_decay <= 1,
                "weight_decay must be in [0, 1]",
            ),
            (0 <= self.patience <= 1000, "patience must be 0 to 1000"),
            (1 <= self.hidden_size <= 4096, "hidden_size must be 1 to 4096"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_proto(cls, request: trainer_pb2.StartTrainingRunRequest) -> TrainingParameters:
        """The fields the caller set; raises ValueError naming every bad one."""
        given = (field.name for field in fields(cls) if request.HasField(field.name))
        return cls(**{name: getattr(request, name) for name in given})

    def to_proto(self) -> common_pb2.TrainingParameters:
        return common_pb2.TrainingParameters(**self.as_dict())

    def as_dict(self) -> dict:
        return asdict(self)
