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
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlmodel import select
from supervisor.xmlrpc import SupervisorTransport

from foodcal.crashwatch import CrashWatch
from foodcal.settings import Settings
from foodcal.store import Database, Sample
from foodcal.store.tables import LabelStatus
from foodcal.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from model_store.client import TorchServeClient
from model_store.ports import free_port
from tests.conftest import ADMIN_TOKEN, API_TOKEN, INTERNAL_TOKEN, OPENAI_KEY, auth, photo
from tests.processes import ROOT, env_for
from tests.test_trainer import add_samples, learnable

RECOVERY_BOUND_S = 120.0  # measured 10-25 s on a 2-core machine; this only catches "never"
CLIENTS = 2
GATEWAY_SERVICE = "foodcal.v1.GatewayService"
# A client that reconnects within 2 s of the gateway being back (gRPC's default backoff grows to 2 min).
CLIENT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 2000)]
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class Outcome:
    started: float
    ended: float
    code: str
    sample_id: str = ""
    nutrition_version: int = -1


@dataclass
class Stack:
    process: subprocess.Popen
    rpc: xmlrpc.client.ServerProxy
    log: Path
    ports: dict[str, int]
    torchserve: TorchServeClient
    outcomes: list[Outcome] = field(default_factory=list)
    health: list[tuple[float, str, str]] = field(default_factory=list)  # (t, GatewayService, "")

    def pid(self, program: str) -> int:
        return self.rpc.supervisor.getProcessInfo(f"foodcal:{program}")["pid"]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def supervised_env(run_dir: Path, data: Path, model_store: Path, openai_url: str) -> tuple[dict, dict]:
    ports = {name: free_port() for name in ("gateway", "labeler", "trainer", "ts_grpc", "ts_mgmt")}
    values = {
        "api_tokens": [API_TOKEN],
        "admin_tokens": [ADMIN_TOKEN],
        "internal_token": INTERNAL_TOKEN,
        "database_url": f"sqlite:///{data}/foodcal.db",
        "data_dir": data / "data",
        "upload_dir": data / "uploads",
        "models_dir": data / "models",
        "gateway_port": ports["gateway"],
        "labeler_port": ports["labeler"],
        "trainer_port": ports["trainer"],
        "labeler_address": f"127.0.0.1:{ports['labeler']}",
        "trainer_address": f"127.0.0.1:{ports['trainer']}",
        "torchserve_endpoints": [f"127.0.0.1:{ports['ts_grpc']}"],
        "torchserve_management": [f"127.0.0.1:{ports['ts_mgmt']}"],
        "torchserve_http_port": free_port(),
        "torchserve_management_http_port": free_port(),
        "torchserve_metrics_port": free_port(),
        "torchserve_run_dir": run_dir / "torchserve",
        "model_store_dir": model_store,
        # What the session's model store was built with, whatever a developer's .env says.
        "food101_model": "demo",
        **{
            name: Settings.model_fields[name].default
            for name in ("food101_workers", "food101_batch_size", "food101_max_batch_delay_ms")
        },
        "use_chatgpt": True,
        "use_own_model_instead_chatgpt": True,  # labels are collected in the background queue
        "openai_api_key": OPENAI_KEY,
        "openai_base_url": openai_url,
        "openai_max_retries": 0,
        "label_retry_base_s": 0.2,
        "label_retry_max_s": 1.0,
        "label_poll_interval_s": 0.1,
        "min_training_samples": 50,
    }
    env = env_for(values)
    env["FOODCAL_RUN_DIR"] = str(run_dir)
    env["FOODCAL_RETRY_FATAL_S"] = "3"
    return env, ports


def supervisor_rpc(run_dir: Path) -> xmlrpc.client.ServerProxy:
    transport = SupervisorTransport(None, None, f"unix://{run_dir}/supervisor.sock")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def start_stack(env: dict, ports: dict, run_dir: Path) -> Stack:
    log = run_dir / "supervisord.out"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("supervisord")), "-c", str(ROOT / "supervisord.conf")],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while True:
        rpc = supervisor_rpc(run_dir)
        try:
            rpc.supervisor.getState()
            break
        except Exception:  # no socket yet, or not answering yet
            if process.poll() is not None or time.monotonic() > deadline:
                process.terminate()  # supervisord stops whatever it started
                process.wait(timeout=60)
                raise RuntimeError(f"supervisord did not start: {log.read_text()[-3000:]}") from None
            time.sleep(0.2)
    torchserve = TorchServeClient(
        [f"127.0.0.1:{ports['ts_grpc']}"], [f"127.0.0.1:{ports['ts_mgmt']}"], timeout_s=5
    )
    return Stack(process, rpc, log, ports, torchserve)


def stop_stack(stack: Stack) -> float:
    """SIGTERM supervisord as Ctrl-C would; seconds until it and every process under it are gone."""
    tree = [stack.process.pid]
    with contextlib.suppress(psutil.NoSuchProcess):
        tree += [child.pid for child in psutil.Process(stack.process.pid).children(recursive=True)]
    started = time.monotonic()
    stack.process.send_signal(signal.SIGTERM)
    stack.process.wait(timeout=60)
    while any(_alive(pid) for pid in tree) and time.monotonic() - started < 60:
        time.sleep(0.1)
    left = [pid for pid in tree if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"still running after supervisord stopped: {left}"
    return time.monotonic() - started


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def until(predicate, what: str, bound_s: float = RECOVERY_BOUND_S, every_s: float = 0.2):
    deadline = time.monotonic() + bound_s
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {bound_s:.0f}s")
        await asyncio.sleep(every_s)


async def health_of(port: int, service: str) -> str:
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    except grpc.aio.AioRpcError as error:
        return error.code().name


async def watch_health(stack: Stack, stop: asyncio.Event) -> None:
    port = stack.ports["gateway"]
    while not stop.is_set():
        service, overall = await health_of(port, GATEWAY_SERVICE), await health_of(port, "")
        stack.health.append((time.monotonic(), service, overall))
        await asyncio.sleep(0.25)


async def client(stack: Stack, index: int, stop: asyncio.Event) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports['gateway']}", options=CLIENT_OPTIONS) as ch:
        gateway = gateway_pb2_grpc.GatewayServiceStub(ch)
        sent = 0
        while not stop.is_set():
            sent += 1
            request = gateway_pb2.AnalyzeMealRequest(image=photo(color=(index, sent % 256, sent // 256)))
            started = time.monotonic()
            try:
                response = await gateway.AnalyzeMeal(request, metadata=auth(), timeout=30)
                outcome = Outcome(started, time.monotonic(), "OK", response.sample_id)
                outcome.nutrition_version = response.model_versions.nutrition
            except grpc.aio.AioRpcError as error:
                outcome = Outcome(started, time.monotonic(), error.code().name)
            stack.outcomes.append(outcome)
            await asyncio.sleep(0.2 if outcome.code == "OK" else 0.3)


async def outage_and_recovery(stack: Stack, killed_at: float, what: str) -> float:
    """Seconds from the kill to the first answer of a request sent after the outage was seen."""

    async def recovered():
        failures = [o for o in stack.outcomes if o.started >= killed_at and o.code != "OK"]
        if not failures:
            return None
        first_failure = min(o.ended for o in failures)
        oks = [o for o in stack.outcomes if o.code == "OK" and o.started > first_failure]
        return min((o.ended for o in oks), default=None)

    recovered_at = await until(recovered, f"requests after {what}")
    seconds = recovered_at - killed_at
    print(f"{what}: requests answered again {seconds:.1f}s after the kill")
    return seconds


async def served_version(stack: Stack) -> str:
    try:
        return await stack.torchserve.served_version()
    except Exception:
        return ""


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
            run = await gateway.StartTrainingRun(trainer_pb2.StartTrainingRunRequest(), metadata=auth())
            events = [
                r.event
                async for r in gateway.WatchTrainingRun(
                    trainer_pb2.WatchTrainingRunRequest(run_id=run.run_id), metadata=auth()
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


async def _async(value):
    return value


async def _served(stack: Stack, version: str) -> bool:
    return await served_version(stack) == version


async def _async_health(stack: Stack, service: str, wanted: str) -> bool:
    return await health_of(stack.ports["gateway"], service) == wanted


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
