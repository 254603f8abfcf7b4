"""What the quality ledger shows of live rollouts: each version's decisions and its role now."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlmodel import col, select

from foodcal.domain.convert import timestamp
from foodcal.store import Database, Rollout, RolloutMode, RolloutState
from foodcal.v1 import trainer_pb2


def _decision(rollout: Rollout, entry: dict) -> trainer_pb2.RolloutDecision:
    evidence = entry.get("evidence") or {}
    return trainer_pb2.RolloutDecision(
        at=timestamp(datetime.fromisoformat(entry["at"])),
        decision=entry["decision"],
        reason=entry["reason"],
        baseline_version=rollout.baseline_version,
        samples=evidence.get("samples", 0),
        version_score=evidence.get("version_score", 0.0),
        baseline_score=evidence.get("baseline_score", 0.0),
        confidence=evidence.get("confidence", 0.0),
        evidence=evidence.get("evidence", ""),
    )


def _role(rollout: Rollout) -> str:
    if rollout.mode == RolloutMode.SPLIT:
        return f"challenger (split {rollout.split_percent:g}%)"
    return f"challenger ({rollout.mode})"


class Ledger:
    """Every rollout's decisions by version, read once per report."""

    def __init__(self, db: Database) -> None:
        with db.session() as session:
            rollouts = session.exec(select(Rollout).order_by(col(Rollout.started_at))).all()
        self.decisions: dict[int, list[trainer_pb2.RolloutDecision]] = defaultdict(list)
        self.roles: dict[int, str] = {}
        for rollout in rollouts:
            self.decisions[rollout.version] += [_decision(rollout, entry) for entry in rollout.decisions]
            if rollout.state == RolloutState.CHALLENGER:
                self.roles[rollout.version] = _role(rollout)

    def role(self, version: int, served: bool) -> str:
        return "served" if served else self.roles.get(version, "")
