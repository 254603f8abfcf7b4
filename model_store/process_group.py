"""Stopping a TorchServe by its process group, including one a killed wrapper left behind."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_group(pgid: int, timeout_s: float, reap=lambda: None) -> None:
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
        stop_group(pgid, timeout_s)
    path.unlink(missing_ok=True)
