"""Values read from the database in a thread and reused for a few seconds: what every AnalyzeMeal
needs but changes rarely (a version's calibration, labels per dish, today's ChatGPT spend)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


class Recent:
    def __init__(self, refresh_s: float) -> None:
        self.refresh_s = refresh_s
        self._values: dict[Hashable, tuple[float, object]] = {}

    async def get(self, key: Hashable, read: Callable[[], T]) -> T:
        """The value under `key`, read again with `read` once it is older than `refresh_s`."""
        read_at, value = self._values.get(key, (-float("inf"), None))
        if time.monotonic() - read_at > self.refresh_s:
            value = await asyncio.to_thread(read)
            self._values[key] = (time.monotonic(), value)
        return value  # type: ignore[return-value]
