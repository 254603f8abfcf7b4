"""The nutrition head. Shipped into the nutrition .mar as an extra file, so it imports only torch.

prediction = probabilities @ table + (linear(linear_features) + mlp(features)) * target_scale,
features = [embedding, probabilities], linear_features = features + [top-1 one-hot, table prediction]

`table` holds each dish's reference serving (calories, proteins, fats, carbs). Version 0 has no
residual: it *is* the reference table. A trained version learns a residual on top of it: the
linear part is solved in closed form (ridge) before any optimiser step, and the MLP starts from
zero output, so training starts at least as good as the closed form on the features.
"""

from __future__ import annotations

import torch
from torch import nn

NUTRIENTS = ("calories_kcal", "proteins_g", "fats_g", "carbs_g")


class NutritionModel(nn.Module):
    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        hidden_size: int = 0,
        dropout: float = 0.1,
        linear: bool = False,  # False in checkpoints made before the linear part existed
    ):
        super().__init__()
        self.embedding_dim, self.num_classes, self.hidden_size = embedding_dim, num_classes, hidden_size
        self.register_buffer("table", torch.zeros(num_classes, len(NUTRIENTS)))
        self.register_buffer("target_scale", torch.ones(len(NUTRIENTS)))
        self.linear: nn.Linear | None = None
        if linear:
            self.linear = nn.Linear(embedding_dim + 2 * num_classes + len(NUTRIENTS), len(NUTRIENTS))
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
        self.residual: nn.Module | None = None
        if hidden_size > 0:
            out = nn.Linear(hidden_size, len(NUTRIENTS))
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)
            self.residual = nn.Sequential(
                nn.LayerNorm(embedding_dim + num_classes),
                nn.Linear(embedding_dim + num_classes, hidden_size),
                nn.GELU(),
                nn.Dropout(dropout),
                out,
            )

    def forward_unclamped(self, embedding: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        prediction = probabilities @ self.table
        correction = torch.zeros_like(prediction)
        if self.linear is not None:
            blocks = self.linear_feature_blocks(embedding, probabilities, prediction)
            correction = correction + self.linear(torch.cat(blocks, dim=-1))
        if self.residual is not None:
            correction = correction + self.residual(torch.cat([embedding, probabilities], dim=-1))
        return prediction + correction * self.target_scale

    def linear_feature_blocks(
        self, embedding: torch.Tensor, probabilities: torch.Tensor, table_prediction: torch.Tensor
    ) -> list[torch.Tensor]:
        """The linear part's inputs, block by block: [embedding, probabilities, top-1 one-hot, the
        table's prediction (standardised)]. The top-1 one-hot says "this dish" even when the
        probabilities are spread; the table's own prediction lets one weight scale every dish at
        once (labels that are 20% above the table for every dish)."""
        top1 = nn.functional.one_hot(probabilities.argmax(dim=-1), self.num_classes).to(probabilities.dtype)
        return [embedding, probabilities, top1, table_prediction / self.target_scale]

    def forward(self, embedding: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        # Nutrients are never negative; nan_to_num keeps every served number finite.
        prediction = self.forward_unclamped(embedding, probabilities)
        return torch.nan_to_num(prediction, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0.0)

    def model_args(self) -> dict:
        return {
            "embedding_dim": self.embedding_dim,
            "num_classes": self.num_classes,
            "hidden_size": self.hidden_size,
            "linear": self.linear is not None,
        }

    def checkpoint(self, **extra: object) -> dict:
        """A dict that rebuilds this model with `from_checkpoint` and nothing else."""
        return {"model_args": self.model_args(), "state_dict": self.state_dict(), **extra}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> NutritionModel:
        model = cls(**checkpoint["model_args"])
        model.load_state_dict(checkpoint["state_dict"])
        return model.eval()

    @classmethod
    def from_table(cls, table: torch.Tensor, embedding_dim: int) -> NutritionModel:
        """Version 0: the reference table as a model."""
        model = cls(embedding_dim=embedding_dim, num_classes=table.shape[0], hidden_size=0)
        model.table.copy_(table)
        return model.eval()
