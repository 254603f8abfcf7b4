"""AnalyzeMeal's answer: what the person sees, ours and ChatGPT's side by side."""

from __future__ import annotations

from foodcal.domain.convert import nutrition_proto
from foodcal.store import LabelStatus
from foodcal.v1 import common_pb2, gateway_pb2
from gateway.analyze import Analysis
from gateway.samples import label_proto, portion_proto


def analysis_response(analysis: Analysis) -> gateway_pb2.AnalyzeMealResponse:
    sample = analysis.sample
    return gateway_pb2.AnalyzeMealResponse(
        sample_id=sample.id,
        dishes=[common_pb2.DishCandidate(label=label, probability=p) for label, p in sample.dishes],
        nutrition=nutrition_proto(analysis.shown),
        source=common_pb2.NutritionSource.Value(sample.shown_source),
        own_prediction=nutrition_proto(analysis.prediction.values),
        chatgpt_label=label_proto(sample),
        model_versions=common_pb2.ModelVersions(
            classifier=analysis.classification.classifier,
            classifier_is_demo=analysis.classification.demo,
            nutrition=analysis.prediction.version,
            labeler_model=sample.label_model,
        ),
        label_status=LabelStatus(sample.label_status).to_proto(),
        duplicate_image=analysis.duplicate_image,
        own_range=common_pb2.NutritionRange(
            low=nutrition_proto(analysis.own_range.low),
            high=nutrition_proto(analysis.own_range.high),
            level=analysis.own_range.level,
            calibrated=analysis.own_range.calibrated,
            group=analysis.own_range.group,
        ),
        label_policy_reason=sample.label_policy_reason,
        own_portion=portion_proto(sample),
        note=sample.note,
        photos=1 + len(sample.more_image_sha256s or []),
        meal_id=sample.meal_id,
        difference=nutrition_proto(sample.difference),
    )
