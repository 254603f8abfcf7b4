"""Reads of a table by a service that does not own it: one named function each, so the columns a
reader depends on are listed in one place (docs/architecture.md, "Tables and who owns them").
The trainer's reads of the gateway's samples live in foodcal/store/training_reads.py, the live
rollouts in foodcal/store/rollouts.py."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, func, select

from foodcal.store.tables import ChatGPTCall, LabelCache, ModelVersionRow


def chatgpt_spent_since(session: Session, since: datetime) -> float:
    """The gateway's daily budget: what the labeler's ChatGPT calls cost since `since`, in USD."""
    query = select(func.coalesce(func.sum(ChatGPTCall.cost_usd), 0.0)).where(
        col(ChatGPTCall.created_at) >= since
    )
    return float(session.exec(query).one())


def chatgpt_usage(session: Session) -> tuple[int, int, int, float]:
    """The gateway's GetStats: the labeler's calls, prompt and completion tokens, and cost (USD)."""
    calls, prompt, completion, cost = session.exec(
        select(
            func.count(),
            func.coalesce(func.sum(ChatGPTCall.prompt_tokens), 0),
            func.coalesce(func.sum(ChatGPTCall.completion_tokens), 0),
            func.coalesce(func.sum(ChatGPTCall.cost_usd), 0.0),
        )
    ).one()
    return int(calls), int(prompt), int(completion), float(cost)


def label_cache_hits(session: Session) -> int:
    """The gateway's GetStats: how often the labeler answered from its cache."""
    return int(session.exec(select(func.coalesce(func.sum(LabelCache.hits), 0))).one())


def calibration_of_version(session: Session, version: int) -> dict | None:
    """The gateway's ranges: the trainer's calibration of `version` (None: none, or no such version)."""
    row = session.get(ModelVersionRow, version)
    return row.calibration if row is not None else None
