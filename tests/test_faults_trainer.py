"""Faults survived with nothing lost: the trainer killed or stopped in the middle of a run."""

import asyncio
import time

import grpc
import pytest
from sqlmodel import select

from foodcal.store import Database, RunStatus
from foodcal.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from tests.conftest import (
    INTERNAL_TOKEN,
    auth,
    free_port,
)
from tests.processes import ServiceProcess, env_for
from tests.test_faults import base_settings
from tests.trainer_helpers import add_samples, learnable
from trainer.backfill import current_classifier


async def trainer_with_labels(torchserve, tmp_path):
    """A trainer process on a free port, over a store with 160 learnable labels: (port, env, db, it)."""
    port = free_port()
    env = env_for(base_settings(tmp_path, torchserve, trainer_port=port))
    db = Database(f"sqlite:///{tmp_path}/foodcal.db")
    db.migrate()
    add_samples(db, 160, await current_classifier(torchserve.client), learnable)
    return port, env, db, ServiceProcess("trainer", port, env, tmp_path / "trainer.log").start()


@pytest.mark.usefixtures("clean_nutrition")
async def test_trainer_killed_mid_run_keeps_the_served_version_and_a_new_run_succeeds(torchserve, tmp_path):
    port, env, db, trainer = await trainer_with_labels(torchserve, tmp_path)
    metadata = auth(INTERNAL_TOKEN)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            run_id = (
                await stub.StartTrainingRun(
                    trainer_pb2.StartTrainingRunRequest(epochs=1000), metadata=metadata
                )
            ).run_id
            for _ in range(200):
                run = (
                    await stub.GetTrainingRun(
                        trainer_pb2.GetTrainingRunRequest(run_id=run_id), metadata=metadata
                    )
                ).run
                if len(run.epochs) >= 2:
                    break
                await asyncio.sleep(0.1)
        trainer.kill()
        assert await torchserve.client.served_version() == "0"
        trainer = ServiceProcess("trainer", port, env, tmp_path / "trainer.log").start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            run = (
                await stub.GetTrainingRun(trainer_pb2.GetTrainingRunRequest(run_id=run_id), metadata=metadata)
            ).run
            assert run.status == common_pb2.TRAINING_RUN_STATUS_FAILED and run.message == "interrupted"
            assert await torchserve.client.served_version() == "0"
            new = await stub.StartTrainingRun(trainer_pb2.StartTrainingRunRequest(), metadata=metadata)
            events = [
                r.event
                async for r in stub.WatchTrainingRun(
                    trainer_pb2.WatchTrainingRunRequest(run_id=new.run_id), metadata=metadata
                )
            ]
        assert events[-1].outcome.status == common_pb2.TRAINING_RUN_STATUS_DEPLOYED, events[
            -1
        ].outcome.message
        assert await torchserve.client.served_version() == "1"
    finally:
        trainer.stop()
        db.dispose()


@pytest.mark.usefixtures("clean_nutrition")
async def test_trainer_sigterm_mid_run_exits_in_seconds_and_the_run_ends_failed_undeployed(
    torchserve, tmp_path
):
    from foodcal.store import ModelVersionRow, TrainingRunRow

    port, _, db, trainer = await trainer_with_labels(torchserve, tmp_path)
    metadata = auth(INTERNAL_TOKEN)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            started = await stub.StartTrainingRun(
                trainer_pb2.StartTrainingRunRequest(epochs=1000), metadata=metadata
            )
            async for response in stub.WatchTrainingRun(
                trainer_pb2.WatchTrainingRunRequest(run_id=started.run_id), metadata=metadata
            ):
                if response.event.epoch.epoch >= 2:
                    break  # mid-run: hundreds of epochs still to go
        began = time.monotonic()
        code = await asyncio.to_thread(trainer.stop)
        seconds = time.monotonic() - began
    finally:
        trainer.kill()
    assert code == 0
    assert seconds < 10, f"SIGTERM took {seconds:.1f} s"
    with db.session() as session:
        run = session.get(TrainingRunRow, started.run_id)
        versions = [row.version for row in session.exec(select(ModelVersionRow)).all()]
    db.dispose()
    assert (run.status, run.message) == (RunStatus.FAILED, "stopped")
    assert len(run.epochs) < 1000 and run.finished_at is not None
    assert versions == [0]  # nothing exported as a version, nothing marked served
    assert await torchserve.client.served_version() == "0"
    assert await torchserve.client.registered_versions() == ["0"]
