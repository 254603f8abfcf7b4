"""Database tables. Schema changes go through alembic (foodcal/store/migrations)."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime

from sqlalchemy import JSON, Column, Index, LargeBinary
from sqlmodel import Field, SQLModel

from foodcal.domain.convert import mirrors_proto_enum
from foodcal.domain.items import FoodItem
from foodcal.domain.labels import Label, LabelSource, LabelStatus
from foodcal.domain.nutrition import NUTRIENTS
from foodcal.v1 import common_pb2


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


@mirrors_proto_enum(common_pb2.TrainingRunStatus, "TRAINING_RUN_STATUS_")
class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DEPLOYED = "deployed"
    CHALLENGER = "challenger"  # better offline; live as a challenger (trainer/rollout.py)
    NOT_DEPLOYED = "not_deployed"
    FAILED = "failed"


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

    # Classifier output, cached so training never re-runs the backbone.
    classifier_version: str = Field(default="", index=True)
    dishes: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    embedding: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    class_probabilities: bytes | None = Field(default=None, sa_column=Column(LargeBinary))

    # Our nutrition model's prediction.
    pred_calories_kcal: float | None = None
    pred_proteins_g: float | None = None
    pred_fats_g: float | None = None
    pred_carbs_g: float | None = None
    pred_model_version: int | None = None
    # The other live version's prediction for the same photo, not shown: the challenger's while the
    # champion answered, or the champion's while the challenger did (foodcal/store/rollouts.py).
    paired_calories_kcal: float | None = None
    paired_proteins_g: float | None = None
    paired_fats_g: float | None = None
    paired_carbs_g: float | None = None
    paired_model_version: int | None = None
    shown_source: str = ""
    # Top-1 dish label: counts labels per dish for the label policy without reading JSON.
    top1_dish: str = Field(default="", index=True, max_length=100)
    # Why ChatGPT was or was not asked (gateway/label_policy.py), and how much its label would
    # teach (pending labels held by the daily budget go most uncertain first).
    label_policy_reason: str = ""
    label_uncertainty: float = 0.0
    # The person's note sent with the photo (foodcal/domain/notes.py), and the weight our numbers assume.
    note: str = ""
    pred_portion_g: float | None = None
    pred_portion_basis: str = ""
    # Who sent the photo: gateway.auth.identity_of(token), never the token; None before 0004.
    owner: str | None = Field(default=None, index=True, max_length=64)
    # The client's meal this plate belongs to ("" = none), and the plate's other angles' sha256s
    # (in the image store; the embedding and probabilities above are pooled over every angle).
    meal_id: str = Field(default="", max_length=64)
    more_image_sha256s: list | None = Field(default=None, sa_column=Column(JSON))

    # The ChatGPT label and its queue state.
    label_status: str = Field(default=LabelStatus.NOT_REQUESTED, index=True, max_length=20)
    label_attempts: int = 0
    label_next_attempt_at: datetime | None = Field(default=None, index=True)
    label_claimed_until: datetime | None = None
    label_claimed_by: str | None = None
    label_error: str = ""  # also why ChatGPT refused, when REJECTED
    # The label (foodcal.domain.labels.Label): set_label() and `label` are the only way in and out.
    label_source: str | None = Field(default=None, max_length=20)  # None: no label
    label_dish: str = ""
    label_portion_g: float | None = None
    label_confidence: float | None = None
    label_provider: str = ""
    label_model: str = ""
    label_flags: list | None = Field(default=None, sa_column=Column(JSON))
    label_items: list | None = Field(default=None, sa_column=Column(JSON))  # FoodItem.to_json()s
    label_calories_kcal: float | None = None
    label_proteins_g: float | None = None
    label_fats_g: float | None = None
    label_carbs_g: float | None = None
    label_cached: bool = False
    labeled_at: datetime | None = None

    # A person's correction outranks ChatGPT wherever training data is read.
    correction_calories_kcal: float | None = None
    correction_proteins_g: float | None = None
    correction_fats_g: float | None = None
    correction_carbs_g: float | None = None
    # foodcal.domain.items.FoodItem.to_json() of each corrected item; None = totals only.
    correction_items: list | None = Field(default=None, sa_column=Column(JSON))
    corrected_at: datetime | None = None
    corrected_by: str | None = Field(default=None, max_length=64)  # gateway.auth identity
    # Why the correction is far from both ChatGPT and our prediction (gateway/corrections.py);
    # "" = not flagged. A flagged correction is not learned from until confirmed (trainer/data.py).
    correction_flag: str = ""
    correction_review: str = Field(default="", max_length=20)  # CorrectionReview: "", confirmed, rejected

    def values(self, prefix: str) -> tuple[float, float, float, float] | None:
        """The four nutrients stored under `pred`, `paired`, `label` or `correction`, or None."""
        values = tuple(getattr(self, f"{prefix}_{name}") for name in NUTRIENTS)
        return None if any(v is None for v in values) else values  # type: ignore[return-value]

    def set_values(self, prefix: str, values: tuple[float, float, float, float] | None) -> None:
        for name, value in zip(NUTRIENTS, values or (None,) * 4, strict=True):
            setattr(self, f"{prefix}_{name}", value)

    @property
    def label(self) -> Label | None:
        if self.label_source is None:
            return None
        return Label(
            source=LabelSource(self.label_source),
            dish=self.label_dish,
            portion_g=self.label_portion_g or 0.0,
            nutrients=self.values("label"),
            confidence=self.label_confidence or 0.0,
            provider=self.label_provider,
            model=self.label_model,
            flags=tuple(self.label_flags or ()),
            items=tuple(FoodItem.from_json(item) for item in self.label_items or ()),
            rejection_reason=self.label_error if self.label_status == LabelStatus.REJECTED else "",
        )

    def set_label(self, label: Label | None) -> None:
        """The rejection reason is the caller's to put in `label_error` (with the status)."""
        self.label_source = None if label is None else str(label.source)
        self.label_dish = label.dish if label else ""
        self.label_portion_g = label.portion_g if label else None
        self.label_confidence = label.confidence if label else None
        self.label_provider, self.label_model = (label.provider, label.model) if label else ("", "")
        self.label_flags = list(label.flags) if label else None
        self.label_items = [item.to_json() for item in label.items] if label else None
        self.set_values("label", label.nutrients if label else None)

    @property
    def difference(self) -> tuple[float, ...] | None:
        """Our prediction minus ChatGPT's label, per nutrient."""
        ours, theirs = self.values("pred"), self.values("label")
        if ours is None or theirs is None:
            return None
        return tuple(a - b for a, b in zip(ours, theirs, strict=True))

    @property
    def training_target(self) -> tuple[float, float, float, float] | None:
        return self.values("correction") or self.values("label")


@mirrors_proto_enum(common_pb2.CorrectionReview, "CORRECTION_REVIEW_")
class CorrectionReview(enum.StrEnum):
    UNREVIEWED = ""
    CONFIRMED = "confirmed"  # an admin vouches for a flagged correction: it is learned from
    REJECTED = "rejected"  # kept for the record; never learned from, never scored against


class LabelCache(SQLModel, table=True):
    """One paid answer per photo, model, prompt and note: a photo is never paid for twice, and
    another model (OPENAI_MODEL changed), prompt or note is never answered with this one's numbers."""

    __tablename__ = "label_cache"

    image_sha256: str = Field(primary_key=True, max_length=64)
    model: str = Field(primary_key=True)  # the model asked (OPENAI_MODEL); `label` names who answered
    prompt_version: int = Field(primary_key=True)  # labeler.answer.PROMPT_VERSION
    note_sha256: str = Field(default="", primary_key=True, max_length=64)  # "" = no note
    created_at: datetime = Field(default_factory=utcnow)
    outcome: str = Field(max_length=20)  # "labeled" or "rejected"
    label: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    hits: int = 0


class ChatGPTCall(SQLModel, table=True):
    """Every paid call, whatever its outcome: the source of GetStats' usage and cost."""

    __tablename__ = "chatgpt_calls"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    image_sha256: str = Field(max_length=64)
    model: str = ""
    outcome: str = Field(max_length=20)  # labeled, rejected, invalid_answer
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class TrainingRunRow(SQLModel, table=True):
    __tablename__ = "training_runs"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    finished_at: datetime | None = None
    status: str = Field(default=RunStatus.QUEUED, index=True, max_length=20)
    parameters: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    epochs: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    metrics: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    served_version_before: int | None = None
    result_version: int | None = None
    train_samples: int = 0
    val_samples: int = 0
    message: str = ""


class ModelVersionRow(SQLModel, table=True):
    __tablename__ = "model_versions"

    version: int = Field(primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    run_id: str | None = None
    mar_path: str = ""
    checkpoint_path: str = ""
    classifier_version: str = ""
    metrics: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # foodcal.domain.calibration.Calibration of this version on held-out labelled samples; None = never.
    calibration: dict | None = Field(default=None, sa_column=Column(JSON))
    served: bool = False
    description: str = ""


class RateLimit(SQLModel, table=True):
    """One token bucket per client, shared by every gateway on the database (gateway/rate_limit.py):
    `tat` is the bucket's theoretical arrival time (GCRA), in seconds since the epoch."""

    __tablename__ = "rate_limits"

    identity: str = Field(primary_key=True, max_length=64)
    tat: float = 0.0


class AnalyzeRequest(SQLModel, table=True):
    """An AnalyzeMeal `request_id` of one client: claimed before the work, answered after it, so a
    retry returns the first answer instead of storing a second sample (gateway/idempotency.py)."""

    __tablename__ = "analyze_requests"

    owner: str = Field(primary_key=True, max_length=64)
    request_id: str = Field(primary_key=True, max_length=128)
    request_sha256: str = Field(max_length=64)  # the request without its id: a reused id is refused
    created_at: datetime = Field(default_factory=utcnow, index=True)
    claimed_at: datetime = Field(default_factory=utcnow)
    sample_id: str | None = Field(default=None, max_length=32)
    response: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
