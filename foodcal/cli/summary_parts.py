"""The pieces every CLI summary is made of (foodcal/cli/summaries.py): the four nutrients, a dish,
a version, a portion, a table of items. Numbers are rounded the way a person reads them."""

from __future__ import annotations

from google.protobuf.message import Message

from foodcal.v1 import common_pb2

NS = common_pb2
SOURCES = {
    NS.NUTRITION_SOURCE_OWN_MODEL: "own model",
    NS.NUTRITION_SOURCE_CHATGPT: "ChatGPT",
    NS.NUTRITION_SOURCE_REFERENCE: "reference table",
    NS.NUTRITION_SOURCE_CORRECTION: "correction",
}


def nutrients(n: common_pb2.Nutrition, sign: str = "") -> str:
    """`sign="+"` for a difference."""
    grams = (
        f"proteins {n.proteins_g:{sign}.1f} g · fats {n.fats_g:{sign}.1f} g · carbs {n.carbs_g:{sign}.1f} g"
    )
    return f"{n.calories_kcal:{sign}.0f} kcal · {grams}"


def label_status(status: int) -> str:
    return NS.LabelStatus.Name(status).removeprefix("LABEL_STATUS_").lower().replace("_", " ")


def source(value: int) -> str:
    return SOURCES.get(value, "unknown")


def version(message: Message, field: str) -> str:
    """An optional version field: unset means unknown or none, never version 0 (the table)."""
    return str(getattr(message, field)) if message.HasField(field) else "unknown"


def classifier(versions: common_pb2.ModelVersions) -> str:
    return versions.classifier + (" (untrained demo)" if versions.classifier_is_demo else "")


def dish(candidates) -> str:
    if not candidates:
        return "unknown"
    top, *others = candidates
    rest = ", ".join(f"{d.label} {d.probability:.0%}" for d in others[:2])
    return f"{top.label} {top.probability:.0%}" + (f" (then {rest})" if rest else "")


def chatgpt(label: common_pb2.Label) -> str:
    text = f"{label.dish}, confidence {label.confidence:.0%}"
    return text + (f", flagged {', '.join(label.flags)}" if label.flags else "")


def grams(value: float) -> str:
    """A portion next to the numbers: "for 250 g"; empty when unknown (0)."""
    return f"  for {value:.0f} g" if value > 0 else ""


def own_portion(portion: common_pb2.Portion) -> str:
    return f"{portion.grams:.0f} g: {portion.basis}" if portion.grams > 0 else ""


def items(title: str, rows) -> str:
    """A small table of items on the plate, one line each, and their sum."""
    if not rows:
        return ""
    width = max(len(title), *(len(item.name[:30]) for item in rows)) + 2
    header = f"{title:<{width}}{'grams':>7}{'kcal':>7}{'proteins':>10}{'fats':>7}{'carbs':>7}"

    def line(name: str, g: float, n: common_pb2.Nutrition) -> str:
        macros = f"{n.proteins_g:>10.1f}{n.fats_g:>7.1f}{n.carbs_g:>7.1f}"
        return f"{name[:30]:<{width}}{g:>7.0f}{n.calories_kcal:>7.0f}{macros}"

    lines = [header, *(line(item.name, item.grams, item.nutrition) for item in rows)]
    total = common_pb2.Nutrition(
        **{
            f: sum(getattr(i.nutrition, f) for i in rows)
            for f in ("calories_kcal", "proteins_g", "fats_g", "carbs_g")
        }
    )
    lines.append(line("(sum)", sum(item.grams for item in rows), total))
    return "\n".join(lines)


def with_table(text: str, table: str) -> str:
    return f"{text}\n\n{table}" if table else text


def rows_text(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows) + 2
    return "\n".join(f"{name:<{width}}{value}" for name, value in rows)
