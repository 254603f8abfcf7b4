"""`python -m trainer`: serve TrainerService until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from foodcal.rpc.entrypoint import run_service
from foodcal.rpc.grpc_server import ServiceSpec
from foodcal.rpc.internal_tls import server_tls
from foodcal.settings import Settings
from foodcal.store import Database, open_image_store
from foodcal.v1 import trainer_pb2, trainer_pb2_grpc
from model_store.torchserve_client import ModelServerError, TorchServeClient
from trainer.backfill import current_classifier
from trainer.data import count_labelled
from trainer.hot_swap import NutritionReplicas
from trainer.rollout import RolloutPolicy, Rollouts
from trainer.runs import Refused, RunManager
from trainer.service import TrainerServicer
from trainer.training import TrainingParameters
from trainer.versions import VersionStore

log = logging.getLogger("trainer")


async def auto_retrain(
    settings: Settings, runs: RunManager, labels_at_start: int, poll_s: float = 10.0
) -> None:
    """AUTO_RETRAIN_EVERY_N_LABELS / AUTO_RETRAIN_INTERVAL_S start runs through the same path."""
    every_n, interval = settings.auto_retrain_every_n_labels, settings.auto_retrain_interval_s
    labels_at_last_run, last_run_at = labels_at_start, time.monotonic()
    while True:
        await asyncio.sleep(min(poll_s, interval or poll_s))
        labels = await asyncio.to_thread(count_labelled, runs.db)
        due_by_labels = every_n and labels - labels_at_last_run >= every_n
        due_by_time = interval and time.monotonic() - last_run_at >= interval
        if not (due_by_labels or due_by_time):
            continue
        try:
            run = await runs.start(TrainingParameters())
            log.info("auto-retrain started run %s (%d labels)", run.id, labels)
            labels_at_last_run, last_run_at = labels, time.monotonic()
        except Refused as refused:
            log.info("auto-retrain skipped: %s", refused)
        except Exception:
            log.exception("auto-retrain could not start a run")


RECONCILE_EVERY_S = 2.0


async def keep_reconciled(versions: VersionStore, every_s: float = RECONCILE_EVERY_S) -> None:
    """Keep every replica serving the database's version, for as long as the trainer runs.

    At start-up TorchServe may come up after us; later a TorchServe that crashed and was restarted
    (by supervisord under `make run`, by the orchestrator elsewhere) comes back with nutrition v0
    only. A check is two DescribeModel calls per replica; a swap happens only on a mismatch. Each
    new trouble is logged once, not every two seconds.
    """
    trouble = ""
    while True:
        try:
            await versions.reconcile()
            if trouble:
                log.info("TorchServe reconciled again (it was: %s)", trouble)
            trouble = ""
        except ModelServerError as error:
            if not trouble:
                log.warning("TorchServe not reconciled (%s); checking every %.0fs", error, every_s)
            trouble = str(error)
        except Exception as error:
            if f"{type(error).__name__}: {error}" != trouble:
                log.exception("reconciling TorchServe failed; checking every %.0fs", every_s)
            trouble = f"{type(error).__name__}: {error}"
        await asyncio.sleep(every_s)


async def judge_rollouts(rollouts: Rollouts, every_s: float) -> None:
    """Challengers promoted or retired, served versions rolled back, on live evidence."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await rollouts.check()
        except Exception:
            log.exception("checking the live rollouts failed; again in %.1fs", every_s)


def build(settings: Settings, db: Database) -> ServiceSpec:
    settings.require_internal_token()
    torchserve = TorchServeClient.from_settings(settings)
    versions = VersionStore(
        db, settings.model_store_dir, NutritionReplicas(torchserve), settings.swap_drain_s
    )
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    rollouts = Rollouts(db, versions, RolloutPolicy.from_settings(settings))
    runs = RunManager(
        db,
        versions,
        settings.models_dir,
        settings.min_training_samples,
        lambda: current_classifier(torchserve),
        range_level=settings.range_level,
        label_exploration=settings.label_policy_exploration if settings.label_policy == "uncertain" else 0.0,
        max_share_per_client=settings.training_max_share_per_client,
        rollouts=rollouts,
    )
    interrupted = runs.fail_interrupted()
    if interrupted:
        log.warning("%d training run(s) were interrupted by a previous stop; marked FAILED", interrupted)
    versions.ensure_baseline()
    background: list[asyncio.Task] = []

    async def on_start() -> None:
        background.append(asyncio.create_task(keep_reconciled(versions)))
        background.append(asyncio.create_task(judge_rollouts(rollouts, settings.rollout_check_interval_s)))
        if settings.auto_retrain_every_n_labels or settings.auto_retrain_interval_s:
            labels = await asyncio.to_thread(count_labelled, db)  # counted before we report SERVING
            background.append(asyncio.create_task(auto_retrain(settings, runs, labels)))

    async def on_stop() -> None:
        await runs.stop()
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await torchserve.close()

    return ServiceSpec(
        name="trainer",
        register=lambda server: trainer_pb2_grpc.add_TrainerServiceServicer_to_server(
            TrainerServicer(runs, versions, torchserve, open_image_store(settings)), server
        ),
        service_names=[trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name],
        tokens=[settings.internal_token],
        max_message_bytes=settings.grpc_max_message_bytes,
        on_start=on_start,
        on_stop=on_stop,
        tls=server_tls(settings),
    )


def main() -> None:
    run_service("trainer", build, lambda settings: settings.trainer_port)


if __name__ == "__main__":
    main()
