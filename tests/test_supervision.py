"""`make run` under supervisord, through real processes: what crashes comes back, nothing is lost.

The scenario runs the repository's own supervisord.conf (what `make run` execs) on free ports, with
the demo classifier, SQLite and the OpenAI stub, while two clients keep sending photos:

1. the gateway's port is taken: the gateway keeps dying while it starts, goes FATAL, crashwatch
   says so, and starts it again once the port is free;
2. a training run deploys nutrition v1;
3. kill -9 TorchServe's java, then TorchServe's Python wrapper (its java survives it and must be
   cleaned up), then the gateway, then the trainer mid-run. Each time requests recover by themselves,
   the gateway's GatewayService health is NOT_SERVING while TorchServe cannot classify (the
   server's own health stays SERVING), and v1 is served again;
4. every sample a client was told about exists and gets its ChatGPT label; SIGTERM stops it all.

Bounds are generous (RECOVERY_BOUND_S) so a loaded 2-core machine does not flake; the measured
times are printed (`pytest -s`) and quoted in the README.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

import grpc
import psutil
import pytest
from sqlmodel import select

from foodcal.ops.crashwatch import CrashWatch
from foodcal.store import Database, Sample
from foodcal.store.tables import LabelStatus
from foodcal.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from tests.conftest import INTERNAL_TOKEN, auth
from tests.supervised_stack import (
    CLIENTS,
    GATEWAY_SERVICE,
    _alive,
    start_stack,
    stop_stack,
    supervised_env,
)
from tests.supervision_probes import (
    _async,
    _async_health,
    _served,
    client,
    outage_and_recovery,
    served_version,
    until,
    watch_health,
)
from tests.trainer_helpers import add_samples, learnable


@pytest.fixture
async def supervised(model_store, openai_stub):
    """The stack from supervisord.conf, with the gateway's port taken; always stopped at the end."""
    openai_stub.reset()
    run_dir = Path(tempfile.mkdtemp(prefix="fc-"))  # short: supervisor's and TorchServe's sockets live here
    env, ports = supervised_env(run_dir, run_dir / "state", model_store, openai_stub.base_url)
    blocker = socket.socket()  # 1. the gateway's port is taken while everything starts
    blocker.bind(("127.0.0.1", ports["gateway"]))
    blocker.listen()
    try:
        stack = start_stack(env, ports, run_dir)
    except BaseException:
        blocker.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    db = Database(env["DATABASE_URL"])
    try:
        yield stack, blocker, db
    finally:
        blocker.close()
        await stack.torchserve.close()
        db.dispose()
        seconds = stop_stack(stack)
        print(f"SIGTERM: supervisord and every process under it gone in {seconds:.1f}s")
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.timeout(900)
async def test_supervised_stack_restarts_what_crashes_and_loses_nothing(supervised):
    stack, blocker, db = supervised
    ports = stack.ports
    stop, tasks = asyncio.Event(), []
    try:
        await until(
            lambda: _async(stack.rpc.supervisor.getProcessInfo("foodcal:gateway")["statename"] == "FATAL"),
            "the gateway going FATAL",
            every_s=1.0,
        )
        report = "CRASHWATCH foodcal:gateway keeps dying while it starts"
        await until(lambda: _async(report in stack.output()), "crashwatch reporting the FATAL gateway")
        blocker.close()
        freed = time.monotonic()
        await until(lambda: _async_health(stack, GATEWAY_SERVICE, "SERVING"), "the gateway back after FATAL")
        print(f"FATAL gateway: serving {time.monotonic() - freed:.1f}s after its port was freed")

        # 2. a trained version is served
        db.migrate()
        classifier, _ = await stack.torchserve.identify_classifier()
        add_samples(db, 160, classifier, learnable)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['gateway']}") as channel:
            gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
            run = await gateway.StartTrainingRun(
                gateway_pb2.GatewayServiceStartTrainingRunRequest(), metadata=auth()
            )
            events = [
                r.event
                async for r in gateway.WatchTrainingRun(
                    gateway_pb2.GatewayServiceWatchTrainingRunRequest(run_id=run.run_id), metadata=auth()
                )
            ]
        assert events[-1].outcome.status == common_pb2.TRAINING_RUN_STATUS_DEPLOYED, events[-1]
        assert await served_version(stack) == "1"

        tasks = [asyncio.create_task(client(stack, i, stop)) for i in range(CLIENTS)]
        tasks.append(asyncio.create_task(watch_health(stack, stop)))
        await asyncio.sleep(2)

        # 3a. TorchServe's java, as an out-of-memory kill would
        wrapper = psutil.Process(stack.pid("torchserve"))
        java = [p for p in wrapper.children(recursive=True) if p.name() == "java"]
        assert len(java) == 1, java
        killed = time.monotonic()
        java[0].kill()
        await outage_and_recovery(stack, killed, "TorchServe's java killed")
        await until(lambda: _served(stack, "1"), "v1 served again after java was killed")
        print(f"java killed: v1 served again {time.monotonic() - killed:.1f}s after the kill")
        during = [h for h in stack.health if h[0] > killed and h[1] == "NOT_SERVING"]
        assert during, "GatewayService never said NOT_SERVING while TorchServe was down"
        assert all(overall == "SERVING" for _, _, overall in during), during
        await until(lambda: _async_health(stack, GATEWAY_SERVICE, "SERVING"), "GatewayService SERVING")

        # 3b. TorchServe's Python wrapper: its java outlives it and holds the ports
        wrapper = psutil.Process(stack.pid("torchserve"))
        old_java = [p for p in wrapper.children(recursive=True) if p.name() == "java"]
        killed = time.monotonic()
        wrapper.kill()
        await until(lambda: _async(not any(_alive(p.pid) for p in old_java)), "the orphaned java stopped")
        await until(lambda: _served(stack, "1"), "v1 served again after the wrapper was killed")
        await until(lambda: _async_health(stack, GATEWAY_SERVICE, "SERVING"), "GatewayService SERVING")
        print(f"wrapper killed: serving v1 again {time.monotonic() - killed:.1f}s after the kill")

        # 3c. the gateway
        killed = time.monotonic()
        os.kill(stack.pid("gateway"), signal.SIGKILL)
        await outage_and_recovery(stack, killed, "gateway killed")

        # 3d. the trainer, mid-run
        trainer_channel = grpc.aio.insecure_channel(f"127.0.0.1:{ports['trainer']}")
        trainer = trainer_pb2_grpc.TrainerServiceStub(trainer_channel)
        internal = auth(INTERNAL_TOKEN)
        run_id = (
            await trainer.StartTrainingRun(
                trainer_pb2.StartTrainingRunRequest(epochs=1000), metadata=internal
            )
        ).run_id

        async def two_epochs():
            request = trainer_pb2.GetTrainingRunRequest(run_id=run_id)
            return len((await trainer.GetTrainingRun(request, metadata=internal)).run.epochs) >= 2

        await until(two_epochs, "two epochs of the long run", every_s=0.1)
        killed = time.monotonic()
        os.kill(stack.pid("trainer"), signal.SIGKILL)

        async def interrupted():
            try:
                request = trainer_pb2.GetTrainingRunRequest(run_id=run_id)
                run = (await trainer.GetTrainingRun(request, metadata=internal, timeout=2)).run
            except grpc.aio.AioRpcError:
                return False
            return run.status == common_pb2.TRAINING_RUN_STATUS_FAILED and run.message == "interrupted"

        await until(interrupted, "the restarted trainer marking the run interrupted")
        print(f"trainer killed: back and the run marked interrupted {time.monotonic() - killed:.1f}s later")
        await trainer_channel.close()
        assert await served_version(stack) == "1"
        await asyncio.sleep(2)
        assert not [o for o in stack.outcomes if o.started > killed and o.code != "OK"]
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        blocker.close()

    # 4. nothing lost: every answered sample exists, and every stored one gets its label
    answered = {o.sample_id for o in stack.outcomes if o.code == "OK"}
    versions = {o.nutrition_version for o in stack.outcomes if o.code == "OK"}
    print(f"{len(stack.outcomes)} requests, {len(answered)} answered, nutrition versions {versions}")

    def stored():
        with db.session() as session:
            rows = session.exec(select(Sample).where(Sample.image_path != "unused")).all()
            return {row.id: row.label_status for row in rows}

    async def all_labelled():
        statuses = await asyncio.to_thread(stored)
        return statuses if set(statuses.values()) == {LabelStatus.LABELED} else None

    statuses = await until(all_labelled, "every stored sample labelled")
    assert answered <= set(statuses)
    # A request in flight when the gateway died may be stored without its answer arriving.
    assert len(statuses) - len(answered) <= CLIENTS
    # A restarted TorchServe starts with the served version: no answer ever came from v0.
    assert versions == {1}, versions
    assert await served_version(stack) == "1"


def test_crashwatch_reports_repeated_crashes_once_and_restarts_fatal_processes_after_the_cap():
    now, reports, started = [0.0], [], []
    watch = CrashWatch(reports.append, started.append, retry_fatal_s=60, clock=lambda: now[0])
    watch.exited("foodcal:gateway", expected=True)  # a stop we asked for is no crash
    for _ in range(2):
        watch.exited("foodcal:gateway", expected=False)
        now[0] += 100
    assert reports == []
    watch.exited("foodcal:gateway", expected=False)
    assert len(reports) == 1 and "foodcal:gateway keeps crashing: 3 unexpected exits" in reports[0]
    now[0] += 700  # the window slides: old crashes are forgotten
    watch.exited("foodcal:gateway", expected=False)
    assert len(reports) == 1

    watch.fatal("foodcal:trainer")
    assert "foodcal:trainer keeps dying while it starts" in reports[-1]
    now[0] += 59
    watch.tick()
    assert started == []
    now[0] += 1
    watch.tick()
    watch.tick()
    assert started == ["foodcal:trainer"]  # once per FATAL, not on every tick
