"""Nutrition versions on every TorchServe replica: each change reaches all of them, or none.

A hot-swap: register the new version everywhere -> check every replica answers a real request to
it -> set it default everywhere -> drain -> unregister the old version (unless kept: v0 is the
baseline and the USE_TRAINED_MODEL=false path). A failed step undoes the steps done before it, in
reverse order, and the error says why and what each replica serves, asked after that undo (an undo
step can fail too). `register` and `set_default` alone follow the same rule.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from model_store.archive import NUTRITION
from model_store.torchserve_client import ModelServerError, TorchServeClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One call to one replica, and the call that takes it back (None: nothing to take back)."""

    run: Callable[[], Awaitable[object]]
    undo: Callable[[], Awaitable[object]] | None = None


class NutritionReplicas:
    """The nutrition model's versions across every replica of one TorchServeClient."""

    def __init__(self, torchserve: TorchServeClient) -> None:
        self.torchserve = torchserve
        self.indices = range(len(torchserve.replicas))

    async def defaults(self) -> list[str]:
        """The version each replica serves by default."""
        return [await self.torchserve.served_version(NUTRITION, replica=i) for i in self.indices]

    async def registered(self) -> list[list[str]]:
        """The versions registered on each replica."""
        return [await self.torchserve.registered_versions(NUTRITION, replica=i) for i in self.indices]

    async def register(self, mar_name: str, version: int, embedding_dim: int) -> None:
        """Register `version` on every replica lacking it, and check each answers a request to it."""
        steps = await self._register_steps(mar_name, version, embedding_dim)
        await self._all_or_none(steps, f"registering nutrition v{version}", await self.defaults())

    async def set_default(self, version: int) -> None:
        """Serve `version` (registered everywhere already) by default on every replica."""
        old = await self.defaults()
        await self._all_or_none(self._default_steps(str(version), old), f"serving nutrition v{version}", old)

    async def unregister(self, version: int) -> None:
        """Unregister `version` (served by default nowhere) from every replica that has it; each is
        tried, and the error lists those that failed."""
        failures = []
        for index, versions in zip(self.indices, await self.registered(), strict=True):
            if str(version) in versions:
                failures.append(await _quietly(self._unregister(str(version), index)))
        if any(failures):
            raise ModelServerError(f"unregistering nutrition v{version}: {'; '.join(filter(None, failures))}")

    async def drop_all_but(self, keep: set[str]) -> None:
        """Unregister every version not in `keep` (e.g. registered by a trainer that died mid-swap)."""
        for index, versions in zip(self.indices, await self.registered(), strict=True):
            for version in versions:
                if version not in keep:
                    log.info("unregistering stray nutrition v%s from replica %d", version, index)
                    await self._unregister(version, index)

    async def hot_swap(
        self,
        mar_name: str,
        new_version: int,
        embedding_dim: int,
        keep_versions: Sequence[int] = (0,),
        drain_s: float = 0.5,
    ) -> str:
        """Serve `new_version` on every replica, or on none. Returns the version served before."""
        new, old = str(new_version), []
        what = f"hot-swap to nutrition v{new}"
        try:
            old = await self.defaults()
            steps = await self._register_steps(mar_name, new_version, embedding_dim)
        except ModelServerError as error:
            raise await self._failure(what, error, old, []) from None
        await self._all_or_none([*steps, *self._default_steps(new, old)], what, old)
        # In-flight requests on the old version finish during the drain (see TORCHSERVE.md).
        await asyncio.sleep(drain_s)
        for index, previous in zip(self.indices, old, strict=True):
            if previous != new and int(previous) not in keep_versions:
                await _quietly(self._unregister(previous, index))
        return old[0]

    # -- steps ---------------------------------------------------------------------------------

    async def _register_steps(self, mar_name: str, version: int, embedding_dim: int) -> list[Step]:
        """Register where missing (a rollback to v0 finds it registered), then probe every replica."""
        new, steps = str(version), []
        for index, versions in zip(self.indices, await self.registered(), strict=True):
            if new not in versions:
                steps.append(
                    Step(partial(self._register, mar_name, index), partial(self._unregister, new, index))
                )
        probe = (np.zeros(embedding_dim, "<f4"), np.full(101, 1 / 101, "<f4"))
        return steps + [Step(partial(self._probe, probe, version, index)) for index in self.indices]

    def _default_steps(self, new: str, old: Sequence[str]) -> list[Step]:
        return [
            Step(partial(self._set_default, new, index), partial(self._set_default, previous, index))
            for index, previous in zip(self.indices, old, strict=True)
        ]

    async def _probe(self, probe: tuple[np.ndarray, np.ndarray], version: int, index: int) -> None:
        answer = await self.torchserve.predict_nutrition(*probe, version=version, replica=index)
        if answer.version != version:
            raise ModelServerError(f"probe of v{version} was answered by v{answer.version}")

    async def _register(self, mar_name: str, index: int) -> None:
        await self.torchserve.register(self.torchserve.replicas[index], mar_name)

    async def _set_default(self, version: str, index: int) -> None:
        await self.torchserve.set_default(self.torchserve.replicas[index], NUTRITION, version)

    async def _unregister(self, version: str, index: int) -> None:
        await self.torchserve.unregister(self.torchserve.replicas[index], NUTRITION, version)

    async def _all_or_none(self, steps: Sequence[Step], what: str, old: list[str]) -> None:
        done: list[Step] = []
        try:
            for step in steps:
                await step.run()
                done.append(step)
        except ModelServerError as error:
            undo_failed = [
                failure for step in reversed(done) if step.undo and (failure := await _quietly(step.undo()))
            ]
            raise await self._failure(what, error, old, undo_failed) from None

    async def _failure(
        self, what: str, error: ModelServerError, old: list[str], undo_failed: list[str]
    ) -> ModelServerError:
        undo = f"; undo failed: {'; '.join(undo_failed)}" if undo_failed else ""
        served = await self._served_after_undo(old)
        return ModelServerError(f"{what} failed: {error}; {served}{undo}", error.unavailable)

    async def _served_after_undo(self, old: list[str]) -> str:
        """What each replica serves now, asked after the undo (never assumed from the plan)."""
        now: list[str | None] = []
        for index in self.indices:
            try:
                now.append(await self.torchserve.served_version(NUTRITION, replica=index))
            except ModelServerError:
                now.append(None)
        if now == old and len(set(now)) == 1:
            return f"the old version is still served (v{now[0]} on every replica)"
        return "now " + ", ".join(
            f"{replica.address} serves " + (f"v{version}" if version is not None else "an unknown version")
            for replica, version in zip(self.torchserve.replicas, now, strict=True)
        )


async def _quietly(call: Awaitable[object]) -> str:
    """Run an undo step; its failure is logged and returned (empty when it worked)."""
    try:
        await call
    except ModelServerError as error:
        log.warning("undo step failed: %s", error)
        return str(error)
    return ""
