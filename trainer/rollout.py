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
Every decision is stored on the rollout with its numbers and reason, and logged. A check takes
seconds and runs in every trainer: each swap and state change re-checks its premise under the swap
lock (trainer/rollout_state.py), so a stale decision is dropped instead of undoing a newer one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from foodcal.settings import Settings
from foodcal.store import Database, ModelVersionRow, Rollout, RolloutMode, RolloutState, RunStatus
from foodcal.store.tables import utcnow
from model_store.torchserve_client import ModelServerError
from trainer.gate import EVIDENCE_TRUTH, RULE, Comparison, compare_predictions
from trainer.live_evidence import Evidence, challenger_evidence, served_evidence
from trainer.rollout_state import (
    PROMOTE,
    RETIRE,
    ROLL_BACK,
    SUPERSEDE,
    decide,
    decide_now,
    in_state,
    promote_by_rollback,
    record,
    still,
)
from trainer.versions import DEPLOY_WAIT_S, ServedChanged, VersionStore

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
            try:
                await self.start_challenger(row, baseline, embedding_dim, why)
            except ServedChanged as changed:  # compared with a version no longer served
                return RunStatus.NOT_DEPLOYED, str(changed)
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
        """Retire any live challenger, then serve `row` beside `baseline` as the new one;
        ServedChanged if `baseline` is no longer served by then."""
        version = row.version
        for old in await asyncio.to_thread(in_state, self.db, RolloutState.CHALLENGER):
            await self._retire(old, f"replaced by the newer challenger v{version}")
        rollout = Rollout(
            version=version,
            baseline_version=baseline,
            mode=self.policy.mode,
            split_percent=self.policy.split_percent if self.policy.mode == RolloutMode.SPLIT else 0.0,
            state=RolloutState.CHALLENGER,
        )

        def live() -> None:  # once registered everywhere
            record(rollout, "challenger", f"live as a {self.policy.mode} challenger of v{baseline}: {why}")
            self._save(rollout)

        await self.versions.add_challenger(row, dim, baseline, live)

    async def deployed(self, version: int, baseline: int, why: str) -> None:
        """`version` replaced `baseline` (ROLLOUT=replace): watched from now on."""
        rollout = Rollout(version=version, baseline_version=baseline, mode=RolloutMode.REPLACE, state="")
        rollout.state, rollout.served_at = RolloutState.SERVED, utcnow()
        record(rollout, "deployed", why)
        await asyncio.to_thread(self._save, rollout)

    # -- an operator ---------------------------------------------------------------------------------

    async def rollback(self, version: int) -> tuple[int, int]:
        """Serve `version` again (RollbackModel). A live challenger served this way is promoted in
        the same transaction, so that it is never served but recorded as a challenger or retired."""
        return await self.versions.rollback(
            version, also=lambda session, previous: promote_by_rollback(session, version, previous)
        )

    async def end_challenger(self, version: int | None) -> Rollout:
        """Retire the live challenger (`version`, or whichever is live) on an operator's word;
        LookupError when there is none."""
        live = await asyncio.to_thread(in_state, self.db, RolloutState.CHALLENGER, version)
        which = "" if version is None else f" v{version}"
        if not live:
            raise LookupError(f"no live challenger{which}")
        for rollout in live:
            if not await self._retire(rollout, "ended by an operator"):
                raise LookupError(f"the challenger{which} was decided meanwhile: {rollout.state}")
        return live[-1]

    # -- the periodic check ------------------------------------------------------------------------

    async def check(self) -> None:
        for rollout in await asyncio.to_thread(in_state, self.db, RolloutState.CHALLENGER):
            await self._judge_challenger(rollout, (await asyncio.to_thread(self.versions.served)).version)
        for rollout in await asyncio.to_thread(in_state, self.db, RolloutState.SERVED):  # promotions too
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
        reason = f"better on live traffic: {summary}"
        try:  # only if it is still the live challenger of the served version, under the lock
            await self.versions.deploy(
                row,
                model.embedding_dim,
                replacing=rollout.baseline_version,
                check=still(self.db, rollout, RolloutState.CHALLENGER),
                also=lambda session, _: decide(session, rollout, PROMOTE, reason, numbers),
            )
        except (ServedChanged, ModelServerError) as error:
            await self._retire(rollout, f"{reason}, but not promoted: {error}", numbers)

    async def _watch_served(self, rollout: Rollout, served: int) -> None:
        if served != rollout.version:
            why = f"v{served} is served now; the watch of v{rollout.version} ended"
            await asyncio.to_thread(decide_now, self.db, rollout, SUPERSEDE, why)
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
        numbers = _evidence(now, rollout.version, rollout.baseline_version, evidence.kind)
        try:  # only if the version judged is still served and watched: never undo a newer swap
            await self.versions.rollback(
                rollout.baseline_version,
                check=still(self.db, rollout, RolloutState.SERVED, served=rollout.version),
                also=lambda session, _: decide(session, rollout, ROLL_BACK, reason, numbers),
            )
        except ServedChanged as changed:
            log.info("automatic rollback of v%d dropped: %s", rollout.version, changed)
        except (ModelServerError, LookupError, FileNotFoundError) as error:
            log.error("automatic rollback of v%d failed: %s (%s)", rollout.version, error, reason)

    def _served_evidence(self, rollout: Rollout) -> Evidence | None:
        row = self.versions.row(rollout.baseline_version)
        try:
            baseline = self.versions.model(row)
        except (OSError, KeyError, AttributeError):  # its archive is gone: nothing to go back to
            return None
        return served_evidence(self.db, rollout, self.policy.rollback_window, baseline)

    # -- state ---------------------------------------------------------------------------------------

    async def _retire(self, rollout: Rollout, reason: str, numbers: dict | None = None) -> bool:
        """False: it was decided meanwhile (promoted, served by a rollback, retired by another)."""
        # Under the swap lock: a promotion or rollback under way serves it before or not at all.
        async with self.versions.swap_lock.held(f"retiring challenger v{rollout.version}", DEPLOY_WAIT_S):
            retired = await asyncio.to_thread(decide_now, self.db, rollout, RETIRE, reason, numbers)
        if not retired:
            return False
        await asyncio.sleep(RETIRE_GRACE_S)  # gateways stop asking it once their cached read expires
        try:
            await self.versions.remove_challenger(rollout.version)
        except ModelServerError as error:  # the reconcile loop drops it later
            log.warning("retired challenger v%d is still registered: %s", rollout.version, error)
        return True

    def _save(self, rollout: Rollout) -> None:
        with self.db.session() as session:
            session.merge(rollout)
