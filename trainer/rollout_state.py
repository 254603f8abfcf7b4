"""A rollout's decisions, stored only while the rollout is still in the state they were made on.

Checks run in every trainer and take seconds; an operator or a newer run may end a rollout
meanwhile. A stale decision is dropped here instead of overwriting the newer one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlmodel import Session, col, select

from foodcal.rpc import metrics
from foodcal.store import Database, Rollout, RolloutState
from foodcal.store.tables import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Move:
    before: RolloutState
    after: RolloutState
    decision: str


PROMOTE = Move(RolloutState.CHALLENGER, RolloutState.SERVED, "promoted")
RETIRE = Move(RolloutState.CHALLENGER, RolloutState.RETIRED, "retired")
ROLL_BACK = Move(RolloutState.SERVED, RolloutState.ROLLED_BACK, "rolled_back")
SUPERSEDE = Move(RolloutState.SERVED, RolloutState.SUPERSEDED, "superseded")


def decide(session: Session, rollout: Rollout, move: Move, reason: str, numbers: dict | None = None) -> bool:
    """Make `move` with its reason; False, and nothing stored, when the rollout is no longer in
    `move.before`. `rollout` is updated to what was stored."""
    stored = session.get(Rollout, rollout.id, with_for_update=True)
    if stored is None or stored.state != move.before:
        now = "gone" if stored is None else stored.state
        log.info("nutrition v%d: %s dropped, its rollout is %s now", rollout.version, move.decision, now)
        return False
    stored.state = move.after
    if move.after == RolloutState.SERVED:
        stored.served_at = utcnow()
    else:
        stored.ended_at = utcnow()
    record(stored, move.decision, reason, numbers)
    session.add(stored)
    session.flush()
    for field in ("state", "served_at", "ended_at", "decisions", "baseline_version"):
        setattr(rollout, field, getattr(stored, field))
    return True


def decide_now(db: Database, rollout: Rollout, move: Move, reason: str, numbers: dict | None = None) -> bool:
    with db.session() as session:
        return decide(session, rollout, move, reason, numbers)


def record(rollout: Rollout, decision: str, reason: str, numbers: dict | None = None) -> None:
    """Append a decision to `rollout` (stored with it), count it and log it."""
    entry = {"at": utcnow().isoformat(), "decision": decision, "reason": reason, "evidence": numbers or {}}
    rollout.decisions = [*rollout.decisions, entry]
    metrics.ROLLOUTS.labels(decision).inc()
    level = logging.WARNING if decision in ("rolled_back", "retired") else logging.INFO
    log.log(level, "nutrition v%d %s: %s", rollout.version, decision.replace("_", " "), reason)


def promote_by_rollback(session: Session, version: int, previous: int) -> None:
    """`version` became served by a rollback: if it was the live challenger, it is promoted (in
    the same transaction), never left served but recorded as a challenger, or retired later."""
    live = select(Rollout).where(Rollout.version == version, Rollout.state == RolloutState.CHALLENGER)
    for rollout in session.exec(live).all():
        rollout.baseline_version = previous  # watched from now on against what it replaced
        decide(session, rollout, PROMOTE, f"served by a rollback (a challenger of v{previous} until now)")


def still(db: Database, rollout: Rollout, state: RolloutState, served: int | None = None):
    """A swap's re-check under the lock (trainer/versions.py Check): `rollout` is still in
    `state`, and `served` still the served version."""

    def check(served_now: int) -> str | None:
        if served is not None and served_now != served:
            return f"v{served_now} became the served version meanwhile; nothing was changed"
        with db.session() as session:
            stored = session.get(Rollout, rollout.id)
            if stored is not None and stored.state == state:
                return None
        return f"the rollout of v{rollout.version} was decided meanwhile; nothing was changed"

    return check


def in_state(db: Database, state: RolloutState, version: int | None = None) -> list[Rollout]:
    query = select(Rollout).where(Rollout.state == state)
    if version is not None:
        query = query.where(Rollout.version == version)
    with db.session() as session:
        return list(session.exec(query.order_by(col(Rollout.started_at))))
