"""A training run's progress for its watchers (WatchTrainingRun): each epoch as it ends, then the
run itself when it is finished. In memory: a watcher in another trainer re-reads the run."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from foodcal.store import TrainingRunRow
from trainer.training import EpochResult


class Progress:
    def __init__(self) -> None:
        self._watchers: dict[str, set[asyncio.Queue]] = defaultdict(set)

    def subscribe(self, run_id: str) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._watchers[run_id].add(queue)
        return queue

    def unsubscribe(self, run_id: str, queue: asyncio.Queue) -> None:
        self._watchers[run_id].discard(queue)
        if not self._watchers[run_id]:
            del self._watchers[run_id]

    def publish(self, run_id: str, event: EpochResult | TrainingRunRow) -> None:
        """On the event loop (a training thread calls it through call_soon_threadsafe)."""
        for queue in self._watchers.get(run_id, ()):
            queue.put_nowait(event)
