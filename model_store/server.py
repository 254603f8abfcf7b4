"""TorchServe lifecycle shared by `make run` and the tests: start, wait until ready, stop.

`python -m model_store.server` builds the models, starts TorchServe in the foreground of its own
process group and serves until SIGTERM (supervisord, docker-compose and Kubernetes run it).
How it is configured, and why token authorization is off: model_store/torchserve_config.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from foodcal.settings import Settings, load_settings
from model_store.archive import FOOD101, NUTRITION, nutrition_mar_name
from model_store.process_group import GROUP_FILE, stop_group, stop_leftover
from model_store.torchserve_config import LOG4J2, TorchServeConfig

log = logging.getLogger(__name__)


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
        stop_group(self.process.pid, timeout_s, reap=self.process.poll)
        self.process.wait(timeout=5)
        log.info("torchserve stopped")


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
    from foodcal.rpc.logs import setup_logging
    from model_store.build import build_models
    from model_store.torchserve_client import ModelServerError, TorchServeClient

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
    from foodcal.rpc.logs import setup_logging

    setup_logging("torchserve")
    sys.exit(asyncio.run(_serve_foreground()))


if __name__ == "__main__":
    main()
