"""A sample: one photo sent to AnalyzeMeal, what we predicted and showed, and its parts by job.

Each part is its own table with one job (docs/architecture.md, "Tables and who owns them"):
`label_jobs` (the label queue), `sample_features` (what the trainer learns from), `corrections`
(a person's), `paired_predictions` (a rollout's other version). All are loaded with the sample in
one query; a new Sample gets an empty label job and empty features.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, Index, event
from sqlalchemy.orm import relationship
from sqlmodel import Field, Relationship, SQLModel

from foodcal.store.tables.columns import Nutrients, new_id, nutrients_of, set_nutrients, utcnow
from foodcal.store.tables.corrections import SampleCorrection
from foodcal.store.tables.features import SampleFeatures
from foodcal.store.tables.label_jobs import LabelJob


class PairedPrediction(SQLModel, table=True):
    """The other live version's prediction for the same photo, not shown: the challenger's while the
    champion answered, or the champion's while the challenger did (foodcal/store/rollouts.py)."""

    __tablename__ = "paired_predictions"

    sample_id: str = Field(primary_key=True, foreign_key="samples.id", ondelete="CASCADE", max_length=32)
    model_version: int | None = None
    calories_kcal: float | None = None
    proteins_g: float | None = None
    fats_g: float | None = None
    carbs_g: float | None = None

    @property
    def nutrients(self) -> Nutrients | None:
        return nutrients_of(self)


def _part(target: str, inner: bool = False):
    """One row per sample in another table, loaded in the sample's own query, deleted with it."""
    return Relationship(
        sa_relationship=relationship(
            target, uselist=False, lazy="joined", innerjoin=inner, cascade="all, delete-orphan"
        )
    )


class Sample(SQLModel, table=True):
    __tablename__ = "samples"
    __table_args__ = (Index("ix_samples_meal_id", "owner", "meal_id"),)  # GetMeal: a client's meal

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    image_sha256: str = Field(index=True, max_length=64)
    image_path: str
    filename: str = ""
    width: int = 0
    height: int = 0

    # Our nutrition model's prediction, and the source of the numbers shown (gateway/shown.py).
    pred_calories_kcal: float | None = None
    pred_proteins_g: float | None = None
    pred_fats_g: float | None = None
    pred_carbs_g: float | None = None
    pred_model_version: int | None = None
    shown_source: str = ""
    # The person's note sent with the photo (foodcal/domain/notes.py), and the weight our numbers assume.
    note: str = ""
    pred_portion_g: float | None = None
    pred_portion_basis: str = ""
    # Who sent the photo: gateway.auth.identity_of(token), never the token; None before 0004.
    owner: str | None = Field(default=None, index=True, max_length=64)
    # The client's meal this plate belongs to ("" = none), and the plate's other angles' sha256s
    # (in the image store; the features are pooled over every angle).
    meal_id: str = Field(default="", max_length=64)
    more_image_sha256s: list | None = Field(default=None, sa_column=Column(JSON))

    label_job: LabelJob = _part("LabelJob", inner=True)
    features: SampleFeatures = _part("SampleFeatures", inner=True)
    correction: SampleCorrection | None = _part("SampleCorrection")
    paired: PairedPrediction | None = _part("PairedPrediction")

    @property
    def dishes(self) -> list:
        """The classifier's top-5 [[dish, probability], …] (in the sample's features)."""
        return self.features.dishes

    def values(self, source: str) -> Nutrients | None:
        """The four nutrients of `pred`, `paired`, `label` or `correction`, or None."""
        if source == "pred":
            return nutrients_of(self, "pred")
        part = getattr(self, {"paired": "paired", "label": "label_job", "correction": "correction"}[source])
        return None if part is None else part.nutrients

    def set_prediction(self, values: Nutrients | None) -> None:
        set_nutrients(self, "pred", values)

    @property
    def corrected(self) -> bool:
        return self.correction is not None and self.correction.corrected_at is not None

    @property
    def difference(self) -> tuple[float, ...] | None:
        """Our prediction minus ChatGPT's label, per nutrient."""
        ours, theirs = self.values("pred"), self.values("label")
        if ours is None or theirs is None:
            return None
        return tuple(a - b for a, b in zip(ours, theirs, strict=True))

    @property
    def training_target(self) -> Nutrients | None:
        return self.values("correction") or self.values("label")


_PARTS = frozenset({"label_job", "features", "correction", "paired"})


@event.listens_for(Sample, "init")
def _with_its_parts(_sample: Sample, _args, kwargs: dict) -> None:
    """Every sample has a label job and features from the start: the queue and the trainer join them.
    A column that moved to a part is refused loudly (SQLModel would drop it without a word)."""
    unknown = set(kwargs) - set(Sample.model_fields) - _PARTS
    if unknown:
        raise TypeError(
            f"Sample has no {', '.join(sorted(unknown))}: see its parts ({', '.join(sorted(_PARTS))})"
        )
    sample_id = kwargs.setdefault("id", new_id())  # known now: a part's log line can name its sample
    kwargs.setdefault("label_job", LabelJob())
    kwargs.setdefault("features", SampleFeatures())
    for name in _PARTS:
        if kwargs.get(name) is not None:
            kwargs[name].sample_id = sample_id
