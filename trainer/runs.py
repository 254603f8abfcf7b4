"""Training runs: refusals, the background run, progress events for watchers, deploy-if-better."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from pathlib import Path

from sqlmodel import col, select

from foodcal.domain.calibration import DEFAULT_LEVEL
from foodcal.rpc import logs, metrics
from foodcal.store import Database, ModelVersionRow, RunStatus, TrainingRunRow
from foodcal.store.tables import utcnow
from model_store.reference import food101_labels
from model_store.torchserve_client import ModelServerError
from trainer import quality
from trainer.artifacts import write_artifacts
from trainer.calibrate import calibrate_both
from trainer.data import count_labelled, count_stale, load_dataset
from trainer.gate import RULE, decide
from trainer.rollout import Rollouts
from trainer.targets import run_data
from trainer.training import EpochResult, TrainingParameters, train
from trainer.versions import VersionStore

log = logging.getLogger(__name__)

ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)


class Refused(Exception):
    """A run that may not start; `kind` picks the status code."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # "precondition", "exists" or "unavailable"


class Stopped(Exception):
    """The trainer is shutting down: the run ends FAILED ("stopped") before anything is deployed."""


class RunManager:
    def __init__(
        self,
        db: Database,
        versions: VersionStore,
        models_dir: Path,
        min_samples: int,
        current_classifier,
        range_level: float = DEFAULT_LEVEL,
        label_exploration: float = 0.0,  # LABEL_POLICY_EXPLORATION: weighs photos labelled by chance
        max_share_per_client: float = 1.0,  # TRAINING_MAX_SHARE_PER_CLIENT (trainer/trust.py)
        *,
        rollouts: Rollouts,  # how a better candidate goes live (trainer/rollout.py)
    ) -> None:
        self.db, self.versions, self.models_dir, self.min_samples = (
            db,
            versions,
            Path(models_dir),
            min_samples,
        )
        self.current_classifier = current_classifier  # async () -> str
        self.range_level, self.label_exploration = range_level, label_exploration
        self.max_share_per_client = max_share_per_client
        self.rollouts = rollouts
        self._watchers: dict[str, set[asyncio.Queue]] = defaultdict(set)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._stopping = threading.Event()  # read by the training thread between epochs

    async def stop(self) -> None:
        """On shutdown: the running run stops after its current epoch and ends FAILED, undeployed.

        A swap already under way is finished (or undone) first: a swap is never cut in half."""
        self._stopping.set()
        if self._task is not None:
            await self._task

    def _check_stopping(self) -> None:
        if self._stopping.is_set():
            raise Stopped

    # -- crash recovery ----------------------------------------------------------------------

    def fail_interrupted(self) -> int:
        """A run marked active at start-up belonged to a trainer that died: it ends FAILED."""
        with self.db.session() as session:
            rows = session.exec(select(TrainingRunRow).where(col(TrainingRunRow.status).in_(ACTIVE))).all()
            for row in rows:
                row.status, row.message, row.finished_at = RunStatus.FAILED, "interrupted", utcnow()
                session.add(row)
            return len(rows)

    # -- starting ----------------------------------------------------------------------------

    async def start(self, params: TrainingParameters) -> TrainingRunRow:
        async with self._lock:
            if self._stopping.is_set():
                raise Refused("unavailable", "the trainer is shutting down; start the run again later")
            running = await asyncio.to_thread(self._active_run)
            if running is not None:
                raise Refused("exists", f"training run {running.id} is already {running.status}")
            labelled = await asyncio.to_thread(count_labelled, self.db)
            if labelled == 0:
                raise Refused("precondition", "no training data: collect ChatGPT labels first")
            classifier = await self.current_classifier()
            dataset = await asyncio.to_thread(load_dataset, self.db, classifier, self.max_share_per_client)
            if len(dataset) < self.min_samples:
                stale = await asyncio.to_thread(count_stale, self.db, classifier)
                hint = f" ({stale} more need `make backfill` for classifier {classifier})" if stale else ""
                raise Refused("precondition", f"too little data: {len(dataset)} of {self.min_samples}{hint}")
            run = TrainingRunRow(parameters=params.as_dict(), status=RunStatus.RUNNING)
            await asyncio.to_thread(self._save, run)
            self._task = asyncio.create_task(
                self._run(run, params, dataset, classifier), name=f"run-{run.id}"
            )
            log.info("run %s started: %d samples, %s", run.id, len(dataset), params.as_dict())
            return run

    def _active_run(self) -> TrainingRunRow | None:
        with self.db.session() as session:
            return session.exec(select(TrainingRunRow).where(col(TrainingRunRow.status).in_(ACTIVE))).first()

    def _save(self, run: TrainingRunRow) -> None:
        with self.db.session() as session:
            session.merge(run)

    def get(self, run_id: str) -> TrainingRunRow | None:
        with self.db.session() as session:
            return session.get(TrainingRunRow, run_id)

    def list(self, limit: int) -> list[TrainingRunRow]:
        with self.db.session() as session:
            query = select(TrainingRunRow).order_by(col(TrainingRunRow.created_at).desc()).limit(limit)
            return list(session.exec(query).all())

    # -- progress ----------------------------------------------------------------------------

    def subscribe(self, run_id: str) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._watchers[run_id].add(queue)
        return queue

    def unsubscribe(self, run_id: str, queue: asyncio.Queue) -> None:
        self._watchers[run_id].discard(queue)
        if not self._watchers[run_id]:
            del self._watchers[run_id]

    def _publish(self, run_id: str, event: EpochResult | TrainingRunRow) -> None:
        for queue in self._watchers.get(run_id, ()):
            queue.put_nowait(event)

    # -- the run -----------------------------------------------------------------------------

    async def _run(self, run: TrainingRunRow, params: TrainingParameters, dataset, classifier: str) -> None:
        logs.bind(run_id=run.id)  # every line of this run carries it (LOG_FORMAT=json)
        loop = asyncio.get_running_loop()
        try:
            await self._train_and_deploy(run, params, dataset, classifier, loop)
        except Stopped:
            run.status, run.message = RunStatus.FAILED, "stopped"
        except Exception as error:
            log.exception("run %s failed", run.id)
            run.status, run.message = RunStatus.FAILED, f"{type(error).__name__}: {error}"
        run.finished_at = utcnow()
        metrics.training_run_finished(run)
        try:
            await asyncio.to_thread(self._save, run)
        except Exception as error:  # never leave a run "running" with its watchers waiting forever
            log.exception("run %s: its outcome could not be recorded; recorded without its metrics", run.id)
            run.message += f" (its metrics could not be recorded: {type(error).__name__})"
            run.metrics = {}
            await asyncio.to_thread(self._save, run)
        log.info("run %s %s: %s", run.id, run.status, run.message)
        self._publish(run.id, run)

    async def _train_and_deploy(self, run, params, dataset, classifier, loop) -> None:
        train_data, early_stopping, val_data, truth, bias = await asyncio.to_thread(run_data, dataset)
        if len(val_data) == 0 or len(train_data) == 0:
            raise ValueError("the stable split left training or validation empty; collect more samples")
        run.train_samples, run.val_samples = len(train_data) + len(early_stopping), len(val_data)
        served_row = await asyncio.to_thread(self.versions.served)
        reference = await asyncio.to_thread(self.versions.model, self.versions.row(0))
        run.served_version_before = served_row.version

        def on_epoch(result: EpochResult) -> None:
            run.epochs = [*run.epochs, vars(result)]
            self._save(run)
            loop.call_soon_threadsafe(self._publish, run.id, result)

        best, final, epochs = await asyncio.to_thread(
            train, reference, train_data, early_stopping, params, on_epoch, should_stop=self._stopping.is_set
        )
        self._check_stopping()
        run_dir = self.models_dir / "runs" / run.id
        await asyncio.to_thread(
            write_artifacts, self.models_dir, run, run_dir, best, final, epochs, classifier
        )

        served_model = await asyncio.to_thread(self.versions.model, served_row)
        comparison = await asyncio.to_thread(decide, best, served_model, val_data, truth)
        self._check_stopping()
        candidate, served = comparison.candidate, comparison.served
        run.metrics = {**comparison.as_dict(), "teacher_bias": bias.as_dict(food101_labels())}
        # Ranges from the held-out split, which no version ever trains on: the served version is
        # recalibrated on it as it grows, the candidate calibrated for the day it is served.
        splits, models = (train_data, early_stopping, val_data), (best, served_model)
        candidate_calibration, served_calibration = await asyncio.to_thread(
            calibrate_both, self.db, models, splits, self.range_level, self.label_exploration
        )
        await asyncio.to_thread(self.versions.set_calibration, served_row.version, served_calibration)
        # The quality ledger (trainer/quality.py): both versions on the fixed test set, today.
        test_set = await asyncio.to_thread(quality.at_creation, best, self.db, classifier)
        run.metrics = {**run.metrics, "test_set": test_set}
        if not comparison.better:
            run.status = RunStatus.NOT_DEPLOYED
            run.message = (
                f"not deployed: candidate score {candidate.score:.4f} is not clearly better than served "
                f"v{served_row.version} score {served.score:.4f} ({comparison.summary()}; "
                f"needs {RULE})"
            )
            return
        version = await asyncio.to_thread(self.versions.next_version)
        mar = await asyncio.to_thread(
            self.versions.export, best, version, classifier_version=classifier, run_id=run.id
        )
        row = ModelVersionRow(
            version=version,
            run_id=run.id,
            mar_path=str(mar),
            checkpoint_path=str(run_dir / "nutrition_model_best.pth"),
            classifier_version=classifier,
            metrics={**candidate.as_dict(), "test_set": test_set},
            calibration=candidate_calibration.as_dict(),
            description=f"trained by run {run.id} on {run.train_samples} samples",
        )
        if self._stopping.is_set():  # last point before anything is recorded, registered or served
            mar.unlink(missing_ok=True)
            raise Stopped
        await asyncio.to_thread(self.versions.add, row)
        summary = f"score {candidate.score:.4f} beats v{served_row.version} {served.score:.4f}"
        summary += f" ({comparison.summary()})"
        try:
            run.status, run.message = await self.rollouts.go_live(
                row, best.embedding_dim, served_row.version, summary, self._stopping.is_set
            )
        except ModelServerError as error:
            if self._stopping.is_set():  # gave up waiting for another swap: nothing was changed
                raise Stopped from error
            run.status, run.message = RunStatus.FAILED, str(error)
            return
        if run.status != RunStatus.NOT_DEPLOYED:
            run.result_version = version
