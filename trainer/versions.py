"""Model versions: the .mar store, the served flag in the database, export and hot-swap."""

from __future__ import annotations

import asyncio
import io
import logging
import zipfile
from pathlib import Path

import torch
from sqlmodel import col, select

from foodcal.store import Database, ModelVersionRow
from model_store.archive import build_nutrition_mar, nutrition_mar_name
from model_store.client import TorchServeClient
from model_store.nutrition_model import NutritionModel

log = logging.getLogger(__name__)


def load_mar_checkpoint(mar_path: Path) -> dict:
    """The nutrition checkpoint packed inside a .mar (what TorchServe serves, byte for byte)."""
    with zipfile.ZipFile(mar_path) as archive:
        return torch.load(io.BytesIO(archive.read("nutrition.pth")), map_location="cpu", weights_only=True)


class VersionStore:
    def __init__(self, db: Database, model_store: Path, torchserve: TorchServeClient, drain_s: float) -> None:
        self.db, self.model_store, self.torchserve, self.drain_s = db, Path(model_store), torchserve, drain_s

    def ensure_baseline(self) -> None:
        """Version 0 (the reference table) is always known, and served when nothing else is."""
        with self.db.session() as session:
            if session.get(ModelVersionRow, 0) is None:
                served = session.exec(select(ModelVersionRow).where(ModelVersionRow.served)).first()
                session.add(
                    ModelVersionRow(
                        version=0,
                        mar_path=str(self.model_store / nutrition_mar_name(0)),
                        served=served is None,
                        description="reference table (probabilities x per-dish servings)",
                    )
                )

    def all(self) -> list[ModelVersionRow]:
        with self.db.session() as session:
            return list(session.exec(select(ModelVersionRow).order_by(col(ModelVersionRow.version))).all())

    def served(self) -> ModelVersionRow:
        with self.db.session() as session:
            row = session.exec(select(ModelVersionRow).where(ModelVersionRow.served)).first()
        if row is None:
            raise LookupError("no nutrition version is marked as served")
        return row

    def model(self, row: ModelVersionRow) -> NutritionModel:
        return NutritionModel.from_checkpoint(load_mar_checkpoint(Path(row.mar_path)))

    def next_version(self) -> int:
        return max((row.version for row in self.all()), default=0) + 1

    def export(self, model: NutritionModel, version: int, **metadata) -> Path:
        path = self.model_store / nutrition_mar_name(version)
        return build_nutrition_mar(model, version, path, **metadata)

    async def deploy(self, row: ModelVersionRow, embedding_dim: int) -> None:
        """Hot-swap `row` into every TorchServe replica; the database follows only on success."""
        await self.torchserve.hot_swap(
            Path(row.mar_path).name, row.version, embedding_dim, drain_s=self.drain_s
        )
        self._mark_served(row)

    def _mark_served(self, row: ModelVersionRow) -> None:
        with self.db.session() as session:
            for other in session.exec(select(ModelVersionRow).where(ModelVersionRow.served)).all():
                other.served = False
                session.add(other)
            row.served = True
            session.merge(row)
        log.info("nutrition v%d is now served", row.version)

    async def reconcile(self) -> None:
        """Make every replica serve what the database says is served (e.g. a TorchServe that
        restarted with only v0), and drop versions nobody owns (e.g. registered by a trainer that
        died before setting them default)."""
        row = await asyncio.to_thread(self.served)
        wanted = str(row.version)
        client = self.torchserve
        defaults = [await client.served_version(replica=i) for i in range(len(client.replicas))]
        if any(default != wanted for default in defaults):
            model = await asyncio.to_thread(self.model, row)
            log.info("reconciling TorchServe: serving nutrition v%s (was %s)", wanted, defaults)
            await client.hot_swap(
                Path(row.mar_path).name, row.version, model.embedding_dim, drain_s=self.drain_s
            )
        for index, replica in enumerate(client.replicas):
            for version in await client.registered_versions(replica=index):
                if version not in ("0", wanted):
                    log.info("unregistering stray nutrition v%s", version)
                    await client.unregister(replica, "nutrition", version)

    async def rollback(self, version: int) -> tuple[int, int]:
        with self.db.session() as session:
            row = session.get(ModelVersionRow, version)
        if row is None:
            raise LookupError(f"no nutrition version {version}")
        if not Path(row.mar_path).exists():
            raise FileNotFoundError(f"the archive of v{version} is gone from the model store")
        previous = self.served().version
        if previous == version:
            await self.reconcile()  # already served per the database: make TorchServe agree
            return version, previous
        model = self.model(row)
        await self.deploy(row, model.embedding_dim)
        return version, previous
