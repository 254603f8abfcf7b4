"""Model swaps without TorchServe: a fake replica set and two trainers sharing one database."""

import asyncio
import zipfile
from pathlib import Path

import torch

from foodcal.store import Database, ModelVersionRow
from model_store.worker.nutrition_model import NutritionModel
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

    async def register(self, mar_name, version, embedding_dim):
        self.versions.add(str(version))

    async def unregister(self, version):
        self.versions.discard(str(version))


def _mar(path: Path, version: int) -> Path:
    """An archive holding what load_mar_checkpoint reads (the archiver is not needed here)."""
    model = NutritionModel.from_table(torch.ones(101, 4), embedding_dim=48)
    buffer = path.with_suffix(".pth")
    torch.save(model.checkpoint(version=version), buffer)
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(buffer, "nutrition.pth")
    return path


def trainers_on_one_database(database_url, tmp_path, versions=4):
    """Two VersionStores on one database and one (fake) TorchServe, as two trainer processes would
    be; versions 0 to `versions - 1` exist, v0 served. Yields ([first, second], replicas)."""
    replicas = FakeReplicas()
    dbs = [Database(database_url) for _ in range(2)]
    dbs[0].migrate()
    with dbs[0].session() as session:
        for version in range(versions):
            mar = _mar(tmp_path / f"nutrition-v{version}.mar", version)
            session.add(ModelVersionRow(version=version, mar_path=str(mar), served=version == 0))
    yield [VersionStore(db, tmp_path, replicas, drain_s=0.0) for db in dbs], replicas
    for db in dbs:
        db.dispose()
