"""The repository's supervisord.conf (what `make run` execs) started on free ports for
tests/test_supervision.py: its environment, its XML-RPC handle, start and a SIGTERM stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from grpc_health.v1 import health_pb2
from supervisor.xmlrpc import SupervisorTransport

from foodcal.settings import Settings
from model_store.ports import free_port
from model_store.torchserve_client import TorchServeClient
from tests.conftest import ADMIN_TOKEN, API_TOKEN, INTERNAL_TOKEN, OPENAI_KEY
from tests.processes import ROOT, env_for

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
