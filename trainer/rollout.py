"""Versions on live traffic: a challenger is promoted or retired on evidence, and a served version
that turns clearly worse than the one it replaced is rolled back by itself.

- A run whose candidate passed the offline gate (trainer/gate.py) either serves it at once
  (ROLLOUT=replace) or makes it the live challenger (shadow / split, see gateway/challenger.py).
- Challenger: once ROLLOUT_MIN_SAMPLES photos answered by both versions have a ChatGPT label (or
  MIN_TRUTH_PHOTOS have a person's correction: the truth decides first, trainer/live_evidence.py),
  it is promoted if it wins by the offline gate's own rule (RULE), else retired. One decision, not a
  running test: deciding at a fixed sample count keeps the 95% confidence honest.
- Served: while served, its last ROLLBACK_WINDOW labelled answers are compared with what the version
  it replaced answers for the same photos. Rolled back when that version scores at least
  ROLLBACK_MARGIN lower in ROLLBACK_CONFIDENCE of the paired resamples. Checked again and again, so
  the bar is higher than promotion's (5% vs 2%) and needs ROLLBACK_MIN_SAMPLES: a few unlucky
  labels must not bounce a good version.
Every decision is stored on the rollout with its numbers and reason, and logged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlmodel import col, select

from foodcal import metrics
from foodcal.settings import Settings
from foodcal.store import Database, ModelVersionRow, Rollout, RolloutMode, RolloutState, RunStatus
from foodcal.store.tables import utcnow
from model_store.client import ModelServerError
from trainer.gate import EVIDENCE_TRUTH, RULE, Comparison, compare_predictions
from trainer.live_evidence import Evidence, challenger_evidence, served_evidence
from trainer.versions import ServedChanged, VersionStore

log = logging.getLogger(__name__)

ROLLBACK_MARGIN = 0.05
ROLLBACK_CONFIDENCE = 0.95
ROLLBACK_RULE = (
    f"the version it replaced scores at least {ROLLBACK_MARGIN:.0%} lower "
    f"in {ROLLBACK_CONFIDENCE:.0%} of paired bootstrap resamples"
)
# After a challenger is retired, gateways still route to it until their cached read expires
# (gateway/challenger.py REFRESH_S = 2 s): it stays registered a little longer than that.
RETIRE_GRACE_S = 3.0


@dataclass(frozen=True)
class RolloutPolicy:
    """ROLLOUT_* and ROLLBACK_* (their defaults live in foodcal/settings.py only)."""

    mode: str
    split_percent: float
    min_samples: int
    rollback_window: int
    rollback_min_samples: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RolloutPolicy:
        return cls(
            settings.rollout,
            settings.rollout_split_percent,
            settings.rollout_min_samples,
            settings.rollback_window,
            settings.rollback_min_samples,
        )


def _what(evidence: Evidence) -> str:
    if evidence.kind == EVIDENCE_TRUTH:
        return f"{len(evidence)} live photos a person corrected (the truth)"
    return f"{len(evidence)} live labels"


def _evidence(comparison: Comparison, version: int, baseline: int, kind: str) -> dict:
    """The numbers of a decision, the version on trial first, and what they were measured against."""
    return {
        "evidence": kind,
        "samples": comparison.candidate.samples,
        "version": version,
        "baseline_version": baseline,
        "version_score": comparison.candidate.score,
        "baseline_score": comparison.served.score,
        "gain": comparison.improvement,
        "confidence": comparison.confidence,  # share of resamples in which the version scored lower
    }


class Rollouts:
    def __init__(self, db: Database, versions: VersionStore, policy: RolloutPolicy) -> None:
        self.db, self.versions, self.policy = db, versions, policy

    # -- after a run's candidate passed the offline gate -------------------------------------------

    async def go_live(
        self, row: ModelVersionRow, embedding_dim: int, baseline: int, why: str, give_up
    ) -> tuple[RunStatus, str]:
        """The run's outcome: served at once (ROLLOUT=replace) or live as the challenger of
        `baseline`; `give_up()` stops waiting for another swap (ModelServerError)."""
        mode, version = self.policy.mode, row.version
        if mode != RolloutMode.REPLACE:
            await self.start_challenger(row, baseline, embedding_dim, why)
            message = f"v{version} is live as a {mode} challenger of v{baseline}: {why}"
            return (
                RunStatus.CHALLENGER,
                f"{message}; promoted or retired after {self.policy.min_samples} live labels",
            )
        try:
            await self.versions.deploy(row, embedding_dim, replacing=baseline, give_up=give_up)
        except ServedChanged as changed:
            return RunStatus.NOT_DEPLOYED, str(changed)
        await self.deployed(version, baseline, why)
        return RunStatus.DEPLOYED, f"deployed v{version}: {why}"

    async def start_challenger(self, row: ModelVersionRow, baseline: int, dim: int, why: str) -> None:
        """Retire any live challenger, then serve `row` beside `baseline` as the new one."""
        version = row.version
        for old in await asyncio.to_thread(self._in_state, RolloutState.CHALLENGER):
            await self._retire(old, f"replaced by the newer challenger v{version}")
        rollout = Rollout(
            version=version,
            baseline_version=baseline,
            mode=self.policy.mode,
            split_percent=self.policy.split_percent if self.policy.mode == RolloutMode.SPLIT else 0.0,
            state=RolloutState.CHALLENGER,
        )

        def record() -> None:  # once registered everywhere
            self._decide(
                rollout, "challenger", f"live as a {self.policy.mode} challenger of v{baseline}: {why}"
            )
            self._save(rollout)

        await self.versions.add_challenger(row, dim, record)

    async def deployed(self, version: int, baseline: int, why: str) -> None:
        """`version` replaced `baseline` (ROLLOUT=replace): watched from now on."""
        rollout = Rollout(version=version, baseline_version=baseline, mode=RolloutMode.REPLACE, state="")
        self._serve(rollout, "deployed", why)
        await asyncio.to_thread(self._save, rollout)

    # -- the periodic check ------------------------------------------------------------------------

    async def check(self) -> None:
        for rollout in await asyncio.to_thread(self._in_state, RolloutState.CHALLENGER):
            await self._judge_challenger(rollout, (await asyncio.to_thread(self.versions.served)).version)
        for rollout in await asyncio.to_thread(self._in_state, RolloutState.SERVED):  # a promotion included
            await self._watch_served(rollout, (await asyncio.to_thread(self.versions.served)).version)

    async def _judge_challenger(self, rollout: Rollout, served: int) -> None:
        if served != rollout.baseline_version:
            await self._retire(rollout, f"v{served} became the served version; compare with it in a new run")
            return
        evidence = (await asyncio.to_thread(challenger_evidence, self.db, rollout)).preferred()
        if evidence.kind != EVIDENCE_TRUTH and len(evidence) < self.policy.min_samples:
            return
        comparison = compare_predictions(evidence.version, evidence.baseline, evidence.labels)
        numbers = _evidence(comparison, rollout.version, rollout.baseline_version, evidence.kind)
        summary = (
            f"v{rollout.version} score {comparison.candidate.score:.4f} vs v{rollout.baseline_version} "
            f"{comparison.served.score:.4f} on {_what(evidence)} ({comparison.summary()})"
        )
        if not comparison.better:
            await self._retire(
                rollout, f"not clearly better on live traffic: {summary}; needs {RULE}", numbers
            )
            return
        row = await asyncio.to_thread(self.versions.row, rollout.version)
        model = await asyncio.to_thread(self.versions.model, row)
        try:
            await self.versions.deploy(row, model.embedding_dim, replacing=rollout.baseline_version)
        except (ServedChanged, ModelServerError) as error:
            await self._retire(
                rollout, f"better on live traffic ({summary}) but not promoted: {error}", numbers
            )
            return
        self._serve(rollout, "promoted", f"better on live traffic: {summary}", numbers)
        await asyncio.to_thread(self._save, rollout)

    async def _watch_served(self, rollout: Rollout, served: int) -> None:
        if served != rollout.version:
            rollout.state, rollout.ended_at = RolloutState.SUPERSEDED, utcnow()
            self._decide(
                rollout, "superseded", f"v{served} is served now; the watch of v{rollout.version} ended"
            )
            await asyncio.to_thread(self._save, rollout)
            return
        evidence = await asyncio.to_thread(self._served_evidence, rollout)
        evidence = evidence.preferred() if evidence is not None else None
        if evidence is None or (
            evidence.kind != EVIDENCE_TRUTH and len(evidence) < self.policy.rollback_min_samples
        ):
            return
        # The baseline in the candidate's seat: is the version before clearly better?
        back = compare_predictions(evidence.baseline, evidence.version, evidence.labels)
        if back.improvement < ROLLBACK_MARGIN or back.confidence < ROLLBACK_CONFIDENCE:
            return
        now = compare_predictions(evidence.version, evidence.baseline, evidence.labels)
        reason = (
            f"v{rollout.version} score {now.candidate.score:.4f} is clearly worse than "
            f"v{rollout.baseline_version} {now.served.score:.4f} on its last {_what(evidence)} "
            f"({ROLLBACK_RULE}: {back.improvement:.1%} lower in {back.confidence:.0%})"
        )
        try:
            await self.versions.rollback(rollout.baseline_version)
        except (ModelServerError, LookupError, FileNotFoundError) as error:
            log.error("automatic rollback of v%d failed: %s (%s)", rollout.version, error, reason)
            return
        rollout.state, rollout.ended_at = RolloutState.ROLLED_BACK, utcnow()
        self._decide(
            rollout,
            "rolled_back",
            reason,
            _evidence(now, rollout.version, rollout.baseline_version, evidence.kind),
        )
        await asyncio.to_thread(self._save, rollout)

    def _served_evidence(self, rollout: Rollout) -> Evidence | None:
        row = self.versions.row(rollout.baseline_version)
        try:
            baseline = self.versions.model(row)
        except (OSError, KeyError, AttributeError):  # its archive is gone: nothing to go back to
            return None
        return served_evidence(self.db, rollout, self.policy.rollback_window, baseline)

    # -- state ---------------------------------------------------------------------------------------

    async def _retire(self, rollout: Rollout, reason: str, numbers: dict | None = None) -> None:
        rollout.state, rollout.ended_at = RolloutState.RETIRED, utcnow()
        self._decide(rollout, "retired", reason, numbers)
        await asyncio.to_thread(self._save, rollout)  # gateways stop asking it...
        await asyncio.sleep(RETIRE_GRACE_S)  # ...once their cached read expires
        try:
            await self.versions.remove_challenger(rollout.version)
        except ModelServerError as error:  # the reconcile loop drops it later
            log.warning("retired challenger v%d is still registered: %s", rollout.version, error)

    def _serve(self, rollout: Rollout, decision: str, reason: str, numbers: dict | None = None) -> None:
        rollout.state, rollout.served_at = RolloutState.SERVED, utcnow()
        self._decide(rollout, decision, reason, numbers)

    @staticmethod
    def _decide(rollout: Rollout, decision: str, reason: str, numbers: dict | None = None) -> None:
        entry = {
            "at": utcnow().isoformat(),
            "decision": decision,
            "reason": reason,
            "evidence": numbers or {},
        }
        rollout.decisions = [*rollout.decisions, entry]
        metrics.ROLLOUTS.labels(decision).inc()
        level = logging.WARNING if decision in ("rolled_back", "retired") else logging.INFO
        log.log(level, "nutrition v%d %s: %s", rollout.version, decision.replace("_", " "), reason)

    def _in_state(self, state: RolloutState) -> list[Rollout]:
        with self.db.session() as session:
            return list(
                session.exec(select(Rollout).where(Rollout.state == state).order_by(col(Rollout.started_at)))
            )

    def _save(self, rollout: Rollout) -> None:
        with self.db.session() as session:
            session.merge(rollout)
