"""TorchServe lifecycle shared by `make run` and the tests: configure, start, wait until ready, stop.

Token authorization is turned off on purpose: no listener is ever published. REST management
binds to 127.0.0.1; the gRPC listeners, REST inference and metrics bind to TORCHSERVE_BIND_HOST
(127.0.0.1 by default; the private compose network in docker-compose.yml). Our own services are its
only clients, and the keys TorchServe would write expire and would have to be refreshed by every
client. That binding plus `allowed_urls` restricted to our model store is the boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from foodcal.settings import Settings, load_settings
from model_store.archive import FOOD101, NUTRITION, nutrition_mar_name

log = logging.getLogger(__name__)

LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration>
  <Appenders>
    <RollingFile name="ts_log" fileName="${env:LOG_LOCATION}/ts_log.log"
                 filePattern="${env:LOG_LOCATION}/ts_log.%i.log.gz">
      <PatternLayout pattern="%d{ISO8601} [%-5p] %t %c - %m%n"/>
      <Policies><SizeBasedTriggeringPolicy size="20 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="off"/>
    <Logger name="MODEL_METRICS" level="off"/>
    <Logger name="TS_METRICS" level="off"/>
    <Logger name="io.netty" level="error"/>
    <Logger name="org.apache" level="off"/>
    <Logger name="MODEL_LOG" level="warn"><AppenderRef ref="ts_log"/></Logger>
    <Logger name="org.pytorch.serve" level="warn"><AppenderRef ref="ts_log"/></Logger>
    <Root level="warn"/>
  </Loggers>
</Configuration>
"""


@dataclass
class TorchServeConfig:
    model_store: Path
    run_dir: Path
    grpc_inference_port: int = 7070
    grpc_management_port: int = 7071
    http_port: int = 8080
    management_http_port: int = 8081
    metrics_port: int = 8082
    # gRPC inference/management, REST inference and metrics; REST management stays on loopback.
    bind_host: str = "127.0.0.1"
    max_request_bytes: int = 12 * 1024 * 1024
    heap: str = "512m"
    workers_per_model: int = 1
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> TorchServeConfig:
        def port(address: str) -> int:
            return int(address.rsplit(":", 1)[1])

        return cls(
            model_store=Path(settings.model_store_dir).resolve(),
            run_dir=Path(settings.torchserve_run_dir).resolve(),
            grpc_inference_port=port(settings.torchserve_endpoints[0]),
            grpc_management_port=port(settings.torchserve_management[0]),
            http_port=settings.torchserve_http_port,
            management_http_port=settings.torchserve_management_http_port,
            metrics_port=settings.torchserve_metrics_port,
            bind_host=settings.torchserve_bind_host,
            max_request_bytes=settings.grpc_max_message_bytes,
        )

    @classmethod
    def on_free_ports(cls, model_store: Path, run_dir: Path) -> TorchServeConfig:
        """Every listener on a free loopback port: tests and benchmarks run beside `make run`."""
        return cls(
            model_store=Path(model_store).resolve(),
            run_dir=Path(run_dir).resolve(),
            grpc_inference_port=free_port(),
            grpc_management_port=free_port(),
            http_port=free_port(),
            management_http_port=free_port(),
            metrics_port=free_port(),
        )

    @property
    def inference_address(self) -> str:
        return f"127.0.0.1:{self.grpc_inference_port}"

    @property
    def management_address(self) -> str:
        return f"127.0.0.1:{self.grpc_management_port}"

    def properties(self) -> str:
        store = str(self.model_store)
        values = {
            "inference_address": f"http://{self.bind_host}:{self.http_port}",
            "management_address": f"http://127.0.0.1:{self.management_http_port}",
            "metrics_address": f"http://{self.bind_host}:{self.metrics_port}",  # read-only, for Prometheus
            "metrics_mode": "prometheus",
            "grpc_inference_address": self.bind_host,
            "grpc_inference_port": str(self.grpc_inference_port),
            "grpc_management_address": self.bind_host,
            "grpc_management_port": str(self.grpc_management_port),
            "model_store": store,
            # Only archives inside our model store may be registered (a regex per entry).
            "allowed_urls": f"file://{store}/[A-Za-z0-9_.-]+\\\\.mar",
            "enable_model_api": "true",
            "disable_token_authorization": "true",
            "max_request_size": str(self.max_request_bytes),
            "max_response_size": str(self.max_request_bytes),
            "default_workers_per_model": str(self.workers_per_model),
            "vmargs": f"-Xmx{self.heap} -XX:+ExitOnOutOfMemoryError",
            "install_py_dep_per_model": "false",
            "disable_system_metrics": "true",
            "async_logging": "true",
            "default_response_timeout": "60",
            **self.extra,
        }
        return "".join(f"{key}={value}\n" for key, value in values.items())


class TorchServeProcess:
    """One TorchServe in the foreground of its own process group (so stopping reaches java too)."""

    def __init__(self, config: TorchServeConfig) -> None:
        self.config = config
        self.process: subprocess.Popen | None = None
        self._output_start = 0

    @property
    def log_dir(self) -> Path:
        return self.config.run_dir / "logs"

    def start(self, models: dict[str, str]) -> None:
        run_dir = self.config.run_dir
        for sub in ("tmp", "logs"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        (run_dir / "config.properties").write_text(self.config.properties())
        (run_dir / "log4j2.xml").write_text(LOG4J2)
        env = {
            **os.environ,
            "TMPDIR": str(run_dir / "tmp"),  # extracted archives, pid file and sockets live here
            "LOG_LOCATION": str(self.log_dir),
            "METRICS_LOCATION": str(self.log_dir),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        }
        command = [
            str(Path(sys.executable).with_name("torchserve")),
            "--start",
            "--foreground",
            "--ncs",
            "--ts-config", str(run_dir / "config.properties"),
            "--model-store", str(self.config.model_store),
            "--log-config", str(run_dir / "log4j2.xml"),
            "--models", *(f"{name}={mar}" for name, mar in models.items()),
        ]  # fmt: skip
        stdout = (self.log_dir / "torchserve.out").open("ab")
        self._output_start = stdout.tell()  # a restart in the same run_dir appends
        self.process = subprocess.Popen(
            command, cwd=run_dir, env=env, stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True
        )
        stdout.close()
        log.info("torchserve started (pid %d), grpc %d/%d", self.process.pid,
                 self.config.grpc_inference_port, self.config.grpc_management_port)  # fmt: skip

    def wait_until_listening(self, timeout_s: float = 120.0) -> bool:
        """True once every port is bound ("Model server started."), False if a bind failed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            output = self._output()
            if "Model server started." in output:
                return True
            if not self.alive():
                if "Failed to bind" in output:
                    return False
                raise RuntimeError(f"torchserve exited early; see {self.log_dir}")
            time.sleep(0.2)
        raise TimeoutError(f"torchserve did not open its ports in {timeout_s:.0f}s; see {self.log_dir}")

    def _output(self) -> str:
        with contextlib.suppress(OSError), (self.log_dir / "torchserve.out").open("rb") as out:
            out.seek(self._output_start)
            return out.read().decode(errors="replace")
        return ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the whole group, wait, then SIGKILL whatever outlived the timeout."""
        if self.process is None:
            return
        _stop_group(self.process.pid, timeout_s, reap=self.process.poll)
        self.process.wait(timeout=5)
        log.info("torchserve stopped")


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port that is free now, taken from below the kernel's ephemeral range.

    A port is only free when asked: java binds it seconds later. Outgoing connections take their
    local ports from the ephemeral range, and in CI one took a TorchServe port in that gap
    ("Failed to bind ... Address already in use"). Below the range only our own listeners compete,
    and this process never hands the same port out twice.
    """
    low = ephemeral_port_range()[0]
    for _ in range(200):
        port = random.randrange(10000, low) if low > 11000 else 0
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = sock.getsockname()[1]
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port found")


def ephemeral_port_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def start_on_free_ports(
    model_store: Path, run_dir: Path, models: dict[str, str] | None = None, attempts: int = 3
) -> TorchServeProcess:
    """Start TorchServe on free ports; if one was taken before java bound it, again on new ones."""
    for attempt in range(1, attempts + 1):
        process = TorchServeProcess(TorchServeConfig.on_free_ports(model_store, run_dir))
        process.start(models or default_models())
        if process.wait_until_listening():
            return process
        process.stop()
        log.warning("torchserve could not bind its ports (attempt %d of %d); new ports", attempt, attempts)
    raise RuntimeError(f"torchserve could not bind free ports in {attempts} attempts; see {run_dir}/logs")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_group(pgid: int, timeout_s: float, reap=lambda: None) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`. `reap` collects our own exited child: a zombie
    still counts as a member of its group, and would hold this wait to its end."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            reap()
            if not _group_alive(pgid):
                return
            time.sleep(0.1)


GROUP_FILE = "torchserve.pgid"  # in the run directory: the process group of the TorchServe we started


def _is_torchserve_group(pgid: int) -> bool:
    """True if a live process of group `pgid` is TorchServe (its CLI, java or a model worker)."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        try:
            if os.getpgid(process.pid) != pgid:
                continue
        except OSError:
            continue
        command = " ".join(process.info["cmdline"] or ())
        if "torchserve" in command or "org.pytorch.serve" in command or "model_service_worker" in command:
            return True
    return False


def stop_leftover(run_dir: Path, timeout_s: float = 10.0) -> None:
    """Stop a TorchServe that a SIGKILLed wrapper left behind: it holds the ports we need.

    Java runs in its own process group (so a stop reaches it); a wrapper killed with -9 cannot stop
    it, and a restarted wrapper would fail to bind. The group id is in the run directory.
    """
    path = run_dir / GROUP_FILE
    try:
        pgid = int(path.read_text())
    except (OSError, ValueError):
        return
    if _is_torchserve_group(pgid):
        log.warning("stopping the TorchServe a previous wrapper left running (process group %d)", pgid)
        _stop_group(pgid, timeout_s)
    path.unlink(missing_ok=True)


def default_models(nutrition_mar: str = nutrition_mar_name(0)) -> dict[str, str]:
    return {FOOD101: "food101.mar", NUTRITION: nutrition_mar}


def served_nutrition_mar(settings: Settings) -> str:
    """The archive of the nutrition version the database marks as served, so that a TorchServe
    that restarts (a crash, an OOM kill) answers with that version from its first request instead
    of version 0 until the trainer reconciles it. v0 when nothing else is served, or when the
    database or the archive cannot be read (the trainer's reconcile then catches up)."""
    from sqlmodel import select

    from foodcal.store import Database, ModelVersionRow

    try:
        db = Database(settings.database_url)
        try:
            with db.session() as session:
                row = session.exec(select(ModelVersionRow).where(ModelVersionRow.served)).first()
        finally:
            db.dispose()
    except Exception as error:  # e.g. a fresh machine: no tables yet
        log.info("served nutrition version not known yet (%s); starting with v0", type(error).__name__)
        return nutrition_mar_name(0)
    if row is None or row.version == 0:
        return nutrition_mar_name(0)
    name = Path(row.mar_path).name
    if not (Path(settings.model_store_dir) / name).is_file():
        log.warning(
            "the served nutrition v%d has no archive %s in the store; starting with v0", row.version, name
        )
        return nutrition_mar_name(0)
    return name


async def wait_until_ready(
    client, process: TorchServeProcess | None = None, timeout_s: float = 180.0
) -> None:
    """Ready = each model answers a real prediction (TorchServe's ping is healthy before that)."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"torchserve exited early; see {process.log_dir}")
        try:
            await client.self_test()
            return
        except Exception as error:  # not ready yet: keep polling until the deadline
            last_error = error
            await asyncio.sleep(0.5)
    raise TimeoutError(f"torchserve not ready after {timeout_s:.0f}s: {last_error}")


STOP_TIMEOUT_S = 6.0  # SIGTERM to TorchServe's group, then SIGKILL: well inside supervisord's 10 s


async def _serve_foreground() -> int:
    """Build, start TorchServe, serve until SIGTERM/SIGINT. 1 when TorchServe died under us."""
    from foodcal.logs import setup_logging
    from model_store.build import build_models
    from model_store.client import ModelServerError, TorchServeClient

    settings = load_settings()
    setup_logging("torchserve", settings.log_level, settings.log_format)
    build_models(settings)
    config = TorchServeConfig.from_settings(settings)
    stop_leftover(config.run_dir)
    nutrition = served_nutrition_mar(settings)
    process = TorchServeProcess(config)
    process.start(default_models(nutrition))
    (config.run_dir / GROUP_FILE).write_text(str(process.process.pid))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    client = TorchServeClient.from_settings(settings)
    try:
        ready = asyncio.create_task(wait_until_ready(client, process))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            ready.result()  # raises if TorchServe exited or never became ready
            if nutrition != nutrition_mar_name(0):  # v0 stays registered beside the served version
                try:
                    await client.register(client.replicas[0], nutrition_mar_name(0))
                except ModelServerError as error:
                    log.warning("could not register nutrition v0 beside %s: %s", nutrition, error)
            classifier, demo = await client.identify_classifier()
            log.info(
                "torchserve ready: food101 (%s%s) and nutrition answer predictions",
                classifier,
                ", the UNTRAINED demo classifier" if demo else "",
            )
        ready.cancel()
        while not stop.is_set() and process.alive():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
        stopping.cancel()
        if stop.is_set():
            return 0
        log.error(
            "torchserve exited unexpectedly (status %s); see %s", process.process.returncode, process.log_dir
        )
        return 1
    finally:
        await client.close()
        process.stop(timeout_s=STOP_TIMEOUT_S)
        (config.run_dir / GROUP_FILE).unlink(missing_ok=True)


def main() -> None:
    from foodcal.logs import setup_logging

    setup_logging("torchserve")
    sys.exit(asyncio.run(_serve_foreground()))


if __name__ == "__main__":
    main()
