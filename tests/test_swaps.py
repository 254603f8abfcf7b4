"""Model swaps: one at a time across trainers (a lock with the database), never on the event loop."""

import asyncio
import subprocess
import sys
import threading

import pytest

from foodcal.store import Database
from tests.processes import ROOT
from tests.swap_helpers import trainers_on_one_database
from trainer import versions as versions_module


@pytest.fixture
def two_trainers(database_url, tmp_path):
    """Two VersionStores on one database and one TorchServe, as two trainer processes would be."""
    yield from trainers_on_one_database(database_url, tmp_path)


async def test_deploys_rollbacks_and_reconciles_never_overlap(two_trainers, monkeypatch):
    (first, second), replicas = two_trainers
    loads_on_loop = []
    real_load = versions_module.load_mar_checkpoint

    def load(path):
        loads_on_loop.append(threading.current_thread() is threading.main_thread())
        return real_load(path)

    monkeypatch.setattr(versions_module, "load_mar_checkpoint", load)
    rows = {row.version: row for row in first.all()}
    await asyncio.gather(
        first.rollback(1),
        second.rollback(2),
        first.deploy(rows[3], 48),
        second.reconcile(),
        first.reconcile(),
        second.rollback(0),
        first.rollback(2),
    )
    assert replicas.peak == 1  # never two swaps at once
    assert replicas.default == str(first.served().version) == str(second.served().version)
    assert loads_on_loop and not any(loads_on_loop)  # torch.load ran in worker threads


async def test_a_swap_waits_for_another_trainers_swap_and_gives_up_after_its_timeout(database_url, tmp_path):
    from trainer.swap_lock import SwapBusy, SwapLock

    db = Database(database_url)
    db.migrate()
    holder = subprocess.Popen(  # another trainer process, holding the lock mid-swap
        [sys.executable, "-c", HOLD_LOCK, database_url],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SwapBusy, match="another model swap is in progress"):
            async with SwapLock(db).held("the rollback", timeout_s=0.3):
                pytest.fail("entered while another process held the lock")
        holder.stdin.write("done\n")
        holder.stdin.flush()
        async with SwapLock(db).held("the rollback", timeout_s=10.0):  # released: ours now
            with pytest.raises(SwapBusy):  # and it excludes this process's other callers too
                async with SwapLock(db).held("a reconcile", timeout_s=0.0):
                    pass
    finally:
        holder.kill()
        holder.wait()
        db.dispose()


async def test_a_dead_trainers_lock_is_released_with_its_process(database_url, tmp_path):
    from trainer.swap_lock import SwapLock

    db = Database(database_url)
    db.migrate()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, database_url],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        holder.kill()  # SIGKILL mid-swap: no release code runs
        holder.wait()
        async with SwapLock(db).held("the rollback", timeout_s=10.0):
            pass
    finally:
        db.dispose()


HOLD_LOCK = """
import asyncio, sys
from foodcal.store import Database
from trainer.swap_lock import SwapLock

async def main():
    async with SwapLock(Database(sys.argv[1])).held("the test", timeout_s=10):
        print("held", flush=True)
        await asyncio.to_thread(sys.stdin.readline)

asyncio.run(main())
"""


async def test_a_run_does_not_deploy_over_a_version_that_changed_after_its_comparison(two_trainers):
    from trainer.versions import ServedChanged

    (first, second), replicas = two_trainers
    rows = {row.version: row for row in first.all()}
    await second.rollback(1)  # someone rolled back while the run compared its candidate with v0
    with pytest.raises(ServedChanged, match="v1 became the served version"):
        await first.deploy(rows[3], 48, replacing=0)
    assert replicas.default == "1" and first.served().version == 1
