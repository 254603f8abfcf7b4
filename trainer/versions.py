"""Model versions: the .mar store, the served flag in the database, export; TorchServe follows it
(the swap across every replica is `trainer/hot_swap.py`)."""

from __future__ import annotations

import asyncio
import io
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from sqlmodel import Session, col, select

from foodcal.rpc import metrics
from foodcal.store import Database, ModelVersionRow, Rollout, RolloutState
from model_store.archive import build_nutrition_mar, nutrition_mar_name
from model_store.worker.nutrition_model import NutritionModel
from trainer.hot_swap import NutritionReplicas
from trainer.swap_lock import SwapBusy, SwapLock

log = logging.getLogger(__name__)

DEPLOY_WAIT_S = 300.0  # a run waits out another swap (a registration may take minutes)
ROLLBACK_WAIT_S = 20.0  # within the caller's deadline; then UNAVAILABLE, try again
RECONCILE_WAIT_S = 1.0  # the periodic check just skips a beat while another swap runs

# A swap decided on what was true earlier re-checks it under the lock: given the served version read
# there, why the swap must not happen now (None: go ahead).
Check = Callable[[int], str | None]
# What else changes with the served version, in the same transaction (e.g. its rollout's state):
# given the session and the version served until now.
Also = Callable[[Session, int], None]


def live_challenger_versions(db: Database) -> list[int]:
    with db.session() as session:
        live = select(Rollout.version).where(Rollout.state == RolloutState.CHALLENGER)
        return list(session.exec(live).all())


class ServedChanged(Exception):
    """Another swap changed the served version after the run compared its candidate with it."""


def load_mar_checkpoint(mar_path: Path) -> dict:
    """The nutrition checkpoint packed inside a .mar (what TorchServe serves, byte for byte)."""
    with zipfile.ZipFile(mar_path) as archive:
        return torch.load(io.BytesIO(archive.read("nutrition.pth")), map_location="cpu", weights_only=True)


class VersionStore:
    def __init__(self, db: Database, model_store: Path, replicas: NutritionReplicas, drain_s: float) -> None:
        self.db, self.model_store, self.replicas, self.drain_s = db, Path(model_store), replicas, drain_s
        # One change to TorchServe at a time, across trainers: the periodic reconcile must never
        # see a deploy half done (new version default, database not yet updated) and undo it.
        self.swap_lock = SwapLock(db)

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

    def row(self, version: int) -> ModelVersionRow:
        with self.db.session() as session:
            row = session.get(ModelVersionRow, version)
        if row is None:
            raise LookupError(f"no nutrition version {version}")
        return row

    def add(self, row: ModelVersionRow) -> None:
        with self.db.session() as session:
            session.add(row)

    def model(self, row: ModelVersionRow) -> NutritionModel:
        return NutritionModel.from_checkpoint(load_mar_checkpoint(Path(row.mar_path)))

    def set_calibration(self, version: int, calibration) -> None:
        with self.db.session() as session:
            row = session.get(ModelVersionRow, version)
            if row is not None:
                row.calibration = calibration.as_dict()
                session.add(row)

    def next_version(self) -> int:
        return max((row.version for row in self.all()), default=0) + 1

    def export(self, model: NutritionModel, version: int, **metadata) -> Path:
        path = self.model_store / nutrition_mar_name(version)
        return build_nutrition_mar(model, version, path, **metadata)

    @metrics.model_swap("deploy")
    async def deploy(
        self,
        row: ModelVersionRow,
        embedding_dim: int,
        replacing: int | None = None,
        give_up: Callable[[], bool] = lambda: False,
        check: Check | None = None,
        also: Also | None = None,
    ) -> None:
        """Hot-swap `row` into every TorchServe replica; the database follows only on success.

        `replacing`: the version the candidate was compared with; if another swap changed the served
        version meanwhile, nothing is deployed (ServedChanged), nor when `check` objects.
        `give_up` stops waiting for the lock.
        """
        async with self.swap_lock.held(f"deploying v{row.version}", DEPLOY_WAIT_S, give_up):
            previous = await self._premise(replacing, check)
            await self._swap(row, embedding_dim, previous, also)

    async def _premise(self, replacing: int | None, check: Check | None) -> int:
        """Only with the swap lock held: the served version, if the swap may still go ahead."""
        served = (await asyncio.to_thread(self.served)).version
        if replacing is not None and served != replacing:
            raise ServedChanged(
                f"not deployed: v{served} became the served version while the run compared "
                f"its candidate with v{replacing}; start a new run to compare with v{served}"
            )
        why = None if check is None else await asyncio.to_thread(check, served)
        if why:
            raise ServedChanged(why)
        return served

    async def _swap(self, row: ModelVersionRow, embedding_dim: int, previous: int, also: Also | None) -> None:
        """Only with the swap lock held."""
        await self.replicas.hot_swap(
            Path(row.mar_path).name, row.version, embedding_dim, drain_s=self.drain_s
        )
        await asyncio.to_thread(self._mark_served, row, previous, also)

    async def add_challenger(
        self, row: ModelVersionRow, embedding_dim: int, beside: int, record: Callable[[], None]
    ) -> None:
        """Register `row` on every replica beside the served version `beside` (not its default), or
        on none; `record()` stores it as the live challenger under the same lock, so that the
        reconcile never sees it registered but not yet recorded, and drops it as a stray.
        ServedChanged: `beside` is no longer served (a promotion or rollback came first)."""
        async with self.swap_lock.held(f"adding challenger v{row.version}", DEPLOY_WAIT_S):
            served = (await asyncio.to_thread(self.served)).version
            if served != beside:
                raise ServedChanged(
                    f"not live: v{served} became the served version while the run compared its "
                    f"candidate with v{beside}; start a new run to compare with v{served}"
                )
            await self.replicas.register(Path(row.mar_path).name, row.version, embedding_dim)
            await asyncio.to_thread(record)

    async def remove_challenger(self, version: int) -> None:
        """Unregister a challenger that is not served from every replica."""
        async with self.swap_lock.held(f"removing challenger v{version}", DEPLOY_WAIT_S):
            if (await asyncio.to_thread(self.served)).version != version:
                await self.replicas.unregister(version)

    def _mark_served(self, row: ModelVersionRow, previous: int, also: Also | None = None) -> None:
        with self.db.session() as session:
            for other in session.exec(select(ModelVersionRow).where(ModelVersionRow.served)).all():
                other.served = False
                session.add(other)
            row.served = True
            session.merge(row)
            if also is not None:
                also(session, previous)
        log.info("nutrition v%d is now served", row.version)

    async def reconcile(self, wait_s: float = RECONCILE_WAIT_S) -> bool:
        """Make every replica serve what the database says is served (e.g. a TorchServe that
        restarted with only v0), and drop versions nobody owns (e.g. registered by a trainer that
        died before setting them default). False: skipped, another swap was in progress (it leaves
        TorchServe and the database agreeing, or undoes itself)."""
        try:
            async with self.swap_lock.held("reconciling TorchServe", wait_s):
                await self._reconcile()
        except SwapBusy:
            log.debug("reconcile skipped: another model swap is in progress")
            return False
        return True

    async def _reconcile(self) -> None:
        """Only with the swap lock held."""
        row = await asyncio.to_thread(self.served)
        wanted = str(row.version)
        challengers = {str(v) for v in await asyncio.to_thread(live_challenger_versions, self.db)}
        defaults = await self.replicas.defaults()
        if any(default != wanted for default in defaults):
            model = await asyncio.to_thread(self.model, row)
            log.info("reconciling TorchServe: serving nutrition v%s (was %s)", wanted, defaults)
            await self.replicas.hot_swap(
                Path(row.mar_path).name, row.version, model.embedding_dim, drain_s=self.drain_s
            )
        await self.replicas.drop_all_but({"0", wanted, *challengers})
        registered = await self.replicas.registered()
        for version in challengers:  # e.g. a replica restarted with v0 only: the challenger is back
            if any(version not in versions for versions in registered):
                challenger = await asyncio.to_thread(self.row, int(version))
                model = await asyncio.to_thread(self.model, challenger)
                log.info("reconciling TorchServe: registering challenger v%s again", version)
                await self.replicas.register(
                    Path(challenger.mar_path).name, challenger.version, model.embedding_dim
                )

    def _rollback_target(self, version: int) -> ModelVersionRow:
        row = self.row(version)  # LookupError when unknown
        if not Path(row.mar_path).exists():
            raise FileNotFoundError(f"the archive of v{version} is gone from the model store")
        return row

    @metrics.model_swap("rollback")
    async def rollback(
        self, version: int, check: Check | None = None, also: Also | None = None
    ) -> tuple[int, int]:
        """Serve `version` again; returns (served, previously served). ServedChanged: `check`
        objected to the served version read under the lock; nothing was changed."""
        row = await asyncio.to_thread(self._rollback_target, version)
        async with self.swap_lock.held(f"the rollback to v{version}", ROLLBACK_WAIT_S):
            previous = await self._premise(None, check)
            if previous == version:
                await self._reconcile()  # already served per the database: make TorchServe agree
                return version, previous
            model = await asyncio.to_thread(self.model, row)
            await self._swap(row, model.embedding_dim, previous, also)
        return version, previous
