"""Our services as real OS processes (`python -m gateway`, …), for kill-and-restart tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent


def env_for(settings: dict) -> dict[str, str]:
    """Settings as environment variables (lists comma-joined), on top of a clean environment."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OPENAI_", "USE_", "API_"))}
    for key, value in settings.items():
        env[key.upper()] = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    env["PYTHONPATH"] = str(ROOT)
    for service in ("GATEWAY", "LABELER", "TRAINER"):  # tests run beside `make run` and each other
        env.setdefault(f"{service}_METRICS_PORT", "0")
    return env


class ServiceProcess:
    def __init__(self, module: str, port: int, env: dict[str, str], log_path: Path) -> None:
        self.module, self.port, self.env, self.log_path = module, port, env, log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.module} exited: {self.log_path.read_text()[-2000:]}")
            if serving(self.port):
                return self
            time.sleep(0.2)
        raise TimeoutError(f"{self.module} not SERVING after {timeout_s}s")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a machine dies."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> int:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            return self.process.wait(timeout=30)
        return self.process.returncode if self.process else 0


def serving(port: int) -> bool:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        return response.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False
