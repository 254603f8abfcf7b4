"""Short human summaries of the gateway's answers, for the CLI (`--json` prints the full message).

Numbers are rounded the way a person reads them: whole kcal, grams to one decimal, so the float32
noise of a stored value (`19.399999618530273`) never shows.
"""

from __future__ import annotations

from google.protobuf.message import Message

from foodcal.cli import quality_report
from foodcal.cli.summary_parts import (
    NS,
    chatgpt,
    classifier,
    dish,
    grams,
    items,
    label_status,
    nutrients,
    own_portion,
    rows_text,
    source,
    version,
    with_table,
)
from foodcal.v1 import common_pb2, gateway_pb2


def analyzed(r: gateway_pb2.AnalyzeMealResponse) -> str:
    shown = source(r.source)
    if r.source == NS.NUTRITION_SOURCE_CHATGPT and r.chatgpt_label.model:
        shown += f" ({r.chatgpt_label.model})"
    from_label = r.source == NS.NUTRITION_SOURCE_CHATGPT
    portion = grams(r.chatgpt_label.portion_g if from_label else r.own_portion.grams)
    rows = [
        ("sample", r.sample_id + ("  (this photo was sent before)" if r.duplicate_image else "")),
        ("dish", dish(r.dishes)),
        ("nutrition", nutrients(r.nutrition) + portion),
        ("source", f"{shown} · nutrition version {r.model_versions.nutrition}"),
        ("classifier", classifier(r.model_versions)),
        ("label", label_status(r.label_status)),
    ]
    if r.HasField("chatgpt_label") and r.chatgpt_label.source == NS.NUTRITION_SOURCE_CHATGPT:
        rows.insert(2, ("ChatGPT says", chatgpt(r.chatgpt_label)))
    if r.note:
        rows.insert(1, ("note", r.note))
    # Ours beside ChatGPT's, whichever is shown: the system exists to make the two meet.
    if r.HasField("chatgpt_label") and r.chatgpt_label.HasField("nutrition"):
        at = rows.index(("nutrition", nutrients(r.nutrition) + portion)) + 1
        rows[at:at] = [
            ("ours", f"{nutrients(r.own_prediction)}  (nutrition version {r.model_versions.nutrition})"),
            ("ChatGPT", nutrients(r.chatgpt_label.nutrition)),
            ("ours - ChatGPT", nutrients(r.difference, sign="+")),
        ]
    elif r.source != NS.NUTRITION_SOURCE_OWN_MODEL and r.source != NS.NUTRITION_SOURCE_REFERENCE:
        rows.insert(3, ("ours", nutrients(r.own_prediction)))
    if r.photos > 1:
        rows.insert(1, ("photos", f"{r.photos} angles of one plate, pooled"))
    if r.meal_id:
        rows.insert(1, ("meal", r.meal_id))
    if r.own_portion.grams > 0:
        rows.append(("our portion", own_portion(r.own_portion)))
    return with_table(rows_text(rows), items("items", r.chatgpt_label.items))


def meal(r: gateway_pb2.GetMealResponse) -> str:
    lines = [f"meal {r.meal_id}: {r.plates_count} plate{'s' if r.plates_count != 1 else ''}"]
    for plate in r.plates:
        top = plate.dishes[0].label if plate.dishes else "?"
        lines.append(f"  {plate.sample_id}  {top[:24]:<24}  {nutrients(_shown(plate))}")
    lines.append(f"  {'total':<58}{nutrients(r.total)}")
    return "\n".join(lines)


def _shown(plate: gateway_pb2.Sample) -> common_pb2.Nutrition:
    """What the plate shows: the correction, else what AnalyzeMeal showed (gateway/samples.py)."""
    if plate.corrected:
        return plate.correction
    if plate.shown_source == NS.NUTRITION_SOURCE_CHATGPT and plate.chatgpt_label.HasField("nutrition"):
        return plate.chatgpt_label.nutrition
    return plate.own_prediction


def sample(s: gateway_pb2.Sample) -> str:
    status = label_status(s.label_status) + (f": {s.label_error}" if s.label_error else "")
    rows = [
        ("sample", s.sample_id),
        ("created", s.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("dish", dish(s.dishes)),
        (
            "ours",
            f"{nutrients(s.own_prediction)}{grams(s.own_portion.grams)}"
            f"  (nutrition version {version(s, 'own_prediction_version')})",
        ),
    ]
    if s.note:
        rows.insert(2, ("note", s.note))
    if s.own_portion.grams > 0:
        rows.append(("our portion", own_portion(s.own_portion)))
    if s.chatgpt_label.HasField("nutrition"):
        rows += [
            (
                source(s.chatgpt_label.source),
                nutrients(s.chatgpt_label.nutrition) + grams(s.chatgpt_label.portion_g),
            ),
            ("", chatgpt(s.chatgpt_label)),
            ("ours - label", nutrients(s.difference, sign="+")),
        ]
    if s.corrected:
        review = common_pb2.CorrectionReview.Name(s.correction_review).removeprefix("CORRECTION_REVIEW_")
        rows.append(("correction", f"{nutrients(s.correction)}  ({review.lower()})"))
        if s.correction_flag:
            rows.append(("flagged", f"{s.correction_flag}: not learnt from until an admin confirms it"))
    if s.shown_source:
        rows.append(("shown", source(s.shown_source)))
    attempts = f" (attempts: {s.label_attempts})" if s.label_attempts else ""
    rows.append(("label", status + attempts))
    tables = [items("items", s.chatgpt_label.items), items("corrected items", s.correction_items)]
    return with_table(rows_text(rows), "\n\n".join(t for t in tables if t))


def samples(r: gateway_pb2.ListSamplesResponse) -> str:
    lines = [
        f"{'sample':<33}{'created (UTC)':<18}{'dish':<26}{'ours':>9}{'label':>9}{'truth':>9}  label status"
    ]
    for s in r.samples:
        top = f"{s.dishes[0].label} {s.dishes[0].probability:.0%}" if s.dishes else ""
        theirs = (
            f"{s.chatgpt_label.nutrition.calories_kcal:.0f}" if s.chatgpt_label.HasField("nutrition") else "-"
        )
        truth = f"{s.correction.calories_kcal:.0f}" if s.corrected else "-"
        flag = "  flagged: " + s.correction_flag if s.correction_flag else ""
        lines.append(
            f"{s.sample_id:<33}{s.created_at.ToDatetime():%Y-%m-%d %H:%M}  {top[:24]:<26}"
            f"{s.own_prediction.calories_kcal:>9.0f}{theirs:>9}{truth:>9}  "
            f"{label_status(s.label_status)}{flag}"
        )
    lines.append("(kcal)" + (f"  next page: --page-token {r.next_page_token}" if r.next_page_token else ""))
    return "\n".join(lines)


def stats(r: gateway_pb2.GetStatsResponse) -> str:
    rows = [
        ("samples", str(r.total_samples)),
        ("training data samples", str(r.training_data_samples)),
        ("pending labels", str(r.pending_labels)),
        ("failed labels", str(r.failed_labels)),
        ("rejected labels", str(r.rejected_labels)),
        ("corrected samples", str(r.corrected_samples)),
        ("mean |ours - label|", nutrients(r.mean_absolute_difference)),
    ]
    rows += [
        (
            f"  version {version(v, 'nutrition_version')}",
            f"{nutrients(v.mean_absolute_difference)}  ({v.samples} samples)",
        )
        for v in r.by_version
    ]
    rows += [
        ("ChatGPT calls", f"{r.chatgpt_calls} (+{r.chatgpt_cache_hits} from cache)"),
        ("tokens", f"{r.usage.total_tokens:,}, about ${r.usage.estimated_cost_usd:.4f}"),
        ("served", f"nutrition version {version(r.served, 'nutrition')} · classifier {classifier(r.served)}"),
    ]
    return rows_text(rows)


def versions(r: gateway_pb2.GatewayServiceListModelVersionsResponse) -> str:
    lines = [f"{'version':<9}{'served':<8}{'score':>8}{'samples':>9}  {'created (UTC)':<18}description"]
    for v in r.versions:
        score = f"{v.metrics.score:.4f}" if v.metrics.samples else "-"
        samples_ = str(v.metrics.samples) if v.metrics.samples else "-"
        created = f"{v.created_at.ToDatetime():%Y-%m-%d %H:%M}" if v.HasField("created_at") else ""
        description = v.description or (f"run {v.run_id}" if v.run_id else "")
        served = "served" if v.served else ""
        lines.append(f"{v.version:<9}{served:<8}{score:>8}{samples_:>9}  {created:<18}{description}")
    return "\n".join(lines)


def summary(message: Message) -> str:
    """The summary of any answer the CLI prints."""
    match message:
        case gateway_pb2.AnalyzeMealResponse():
            return analyzed(message)
        case (
            gateway_pb2.GetSampleResponse()
            | gateway_pb2.CorrectSampleResponse()
            | gateway_pb2.ReviewCorrectionResponse()
        ):
            return sample(message.sample)
        case gateway_pb2.ListSamplesResponse():
            return samples(message)
        case gateway_pb2.GetMealResponse():
            return meal(message)
        case gateway_pb2.GetStatsResponse():
            return stats(message)
        case gateway_pb2.GatewayServiceListModelVersionsResponse():
            return versions(message)
        case gateway_pb2.GatewayServiceRollbackModelResponse():
            return f"serving nutrition version {message.served_version} (was {message.previous_version})"
        case gateway_pb2.GatewayServiceEndChallengerResponse():
            return f"challenger v{message.version} retired; v{message.baseline_version} still served"
        case gateway_pb2.GatewayServiceGetQualityReportResponse():
            return quality_report.text(message)
    raise TypeError(f"no summary for {type(message).__name__}")
