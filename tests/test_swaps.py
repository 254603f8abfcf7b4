"""Model swaps: one at a time across trainers (a lock with the database), never on the event loop."""

import asyncio
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from foodcal.store import Database, ModelVersionRow
from model_store.nutrition_model import NutritionModel
from tests.processes import ROOT
from trainer import versions as versions_module
from trainer.versions import VersionStore


class FakeReplicas:
    """Just enough of NutritionReplicas for swaps, on one replica; counts swaps that overlap."""

    def __init__(self) -> None:
        self.default, self.versions = "0", {"0"}
        self.active = self.peak = 0

    async def hot_swap(self, mar_name, new_version, embedding_dim, keep_versions=(0,), drain_s=0.5):
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(0.02)  # register
            self.versions.add(str(new_version))
            await asyncio.sleep(0.02)  # probe
            old, self.default = self.default, str(new_version)
            await asyncio.sleep(0.02)  # drain
            if old not in ("0", self.default):
                self.versions.discard(old)
            return old
        finally:
            self.active -= 1

    async def defaults(self):
        await asyncio.sleep(0.01)
        return [self.default]

    async def drop_all_but(self, keep):
        self.versions &= keep

    async def registered(self):
        return [sorted(self.versions)]


def _mar(path: Path, version: int) -> Path:
    """An archive holding what load_mar_checkpoint reads (the archiver is not needed here)."""
    model = NutritionModel.from_table(torch.ones(101, 4), embedding_dim=48)
    buffer = path.with_suffix(".pth")
    torch.save(model.checkpoint(version=version), buffer)
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(buffer, "nutrition.pth")
    return path


@pytest.fixture
def two_trainers(database_url, tmp_path):
    """Two VersionStores on one database and one TorchServe, as two trainer processes would be."""
    replicas = FakeReplicas()
    dbs = [Database(database_url) for _ in range(2)]
    dbs[0].migrate()
    with dbs[0].session() as session:
        for version in range(4):
            mar = _mar(tmp_path / f"nutrition-v{version}.mar", version)
            session.add(ModelVersionRow(version=version, mar_path=str(mar), served=version == 0))
    yield [VersionStore(db, tmp_path, replicas, drain_s=0.0) for db in dbs], replicas
    for db in dbs:
        db.dispose()


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
