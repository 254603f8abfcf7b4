"""A training run and a model version as their protobuf messages (common.proto)."""

from __future__ import annotations

from foodcal.domain.convert import nutrition_proto, timestamp
from foodcal.store import ModelVersionRow, RunStatus, TrainingRunRow
from foodcal.v1 import common_pb2
from trainer.training import EpochResult


def evaluation_proto(data: dict | None) -> common_pb2.EvaluationMetrics | None:
    if not data:
        return None
    mae = data["mae"]
    return common_pb2.EvaluationMetrics(
        mae=nutrition_proto([mae["calories_kcal"], mae["proteins_g"], mae["fats_g"], mae["carbs_g"]]),
        score=data["score"],
        samples=data["samples"],
    )


def epoch_proto(data: dict | EpochResult) -> common_pb2.EpochMetrics:
    return common_pb2.EpochMetrics(**(vars(data) if isinstance(data, EpochResult) else data))


def run_proto(run: TrainingRunRow) -> common_pb2.TrainingRun:
    return common_pb2.TrainingRun(
        run_id=run.id,
        status=RunStatus(run.status).to_proto(),
        parameters=common_pb2.TrainingParameters(**run.parameters),
        epochs=[epoch_proto(e) for e in run.epochs],
        candidate=evaluation_proto(run.metrics.get("candidate")),
        served=evaluation_proto(run.metrics.get("served")),
        served_version_before=run.served_version_before,  # None: unset
        result_version=run.result_version,  # None: nothing deployed (0 would be the table)
        message=run.message,
        train_samples=run.train_samples,
        val_samples=run.val_samples,
        created_at=timestamp(run.created_at),
        finished_at=timestamp(run.finished_at),
    )


def version_proto(row: ModelVersionRow) -> common_pb2.ModelVersion:
    return common_pb2.ModelVersion(
        version=row.version,
        served=row.served,
        run_id=row.run_id or "",
        metrics=evaluation_proto(row.metrics),
        classifier=row.classifier_version,
        created_at=timestamp(row.created_at),
        description=row.description,
    )
