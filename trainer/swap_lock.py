"""One model swap at a time, across every trainer that shares the database.

A run's deploy, a rollback and the reconcile each change what TorchServe serves and then what the
database records; two of them interleaved can leave the two disagreeing. The lock lives with the
database, so two trainer processes exclude each other too:

- PostgreSQL: a session advisory lock on a connection held for the swap (per schema). A trainer
  that dies mid-swap drops its connection, and the server releases the lock at once.
- SQLite: an exclusive `flock` on a file beside the database file. SQLite is one machine, so every
  trainer sharing the database shares the file; the kernel releases it when a process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from foodcal.store import Database
from foodcal.store.db import DatabaseUnavailable
from model_store.torchserve_client import ModelServerError

log = logging.getLogger(__name__)

POLL_S = 0.1
_ADVISORY = "hashtext(current_schema() || '.foodcal.model_swap')"
_in_memory = threading.Lock()  # an in-memory SQLite database is private to this process


class SwapBusy(ModelServerError):
    """Another swap holds the lock: nothing was changed, try again shortly (UNAVAILABLE)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, unavailable=True)


Release = Callable[[], None]


class SwapLock:
    def __init__(self, db: Database) -> None:
        self.db = db

    @contextlib.asynccontextmanager
    async def held(
        self, what: str, timeout_s: float, give_up: Callable[[], bool] = lambda: False
    ) -> AsyncIterator[None]:
        """Hold the lock for the body; wait at most `timeout_s` (or until `give_up()`) for it."""
        deadline = time.monotonic() + timeout_s
        while True:
            release = await _uncancelled(asyncio.to_thread(self._try_acquire))
            if release is not None:
                break
            if give_up() or time.monotonic() >= deadline:
                raise SwapBusy(
                    f"another model swap is in progress; {what} was not started, try again shortly"
                )
            await asyncio.sleep(POLL_S)
        try:
            yield
        finally:
            await asyncio.shield(asyncio.to_thread(release))

    def _try_acquire(self) -> Release | None:
        try:
            if self.db.is_postgres:
                return self._try_advisory()
            return self._try_flock()
        except DBAPIError as error:
            raise DatabaseUnavailable(f"database unavailable: {type(error.orig).__name__}") from error

    def _try_advisory(self) -> Release | None:
        connection = self.db.engine.connect()
        try:
            got = connection.execute(text(f"SELECT pg_try_advisory_lock({_ADVISORY})")).scalar()
            connection.commit()  # the session lock outlives the transaction; no transaction stays open
        except BaseException:
            connection.invalidate()
            connection.close()
            raise
        if not got:
            connection.close()
            return None

        def release() -> None:
            try:
                connection.execute(text(f"SELECT pg_advisory_unlock({_ADVISORY})"))
                connection.commit()
            except DBAPIError:  # the connection is gone, and the lock with it
                connection.invalidate()
            finally:
                connection.close()

        return release

    def _try_flock(self) -> Release | None:
        path = self.db.engine.url.database
        if not path or path == ":memory:":
            return _in_memory.release if _in_memory.acquire(blocking=False) else None
        fd = os.open(f"{path}-swap.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise

        def release() -> None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

        return release


async def _uncancelled(acquiring) -> Release | None:
    """Await an acquisition; if we are cancelled meanwhile, release what it got before leaving."""
    task = asyncio.ensure_future(acquiring)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        release = await task
        if release is not None:
            release()
        raise
