"""The way from the async endpoints to the synchronous database work: bounded turns, threads of
its own, and every database failure as one `Unavailable` (a 503 page) with one log line.

A request waits for its turn at most `Limits.database_wait` seconds, and a write then waits
for another process's write lock at most as long (the engine's lock wait, set in `service`).
Reads and writes have turns of their own, and together fewer than the engine's pool holds:
with the database locked, POSTs waiting for the lock never exhaust the pool (no `QueuePool
limit` errors) nor Starlette's shared threads, and a GET is not queued behind them. The log
gets one line for a run of refusals (at most one every 10 s, with a count), not a traceback
per request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread
from sqlalchemy.exc import TimeoutError as PoolTimeout

from mailer.core.errors import MailerError
from mailer.web.limits import Limits, OncePer
from mailer.web.pages import RETRY_AFTER_SECONDS
from mailer.web.service import waits_for_lock

log = logging.getLogger("mailer.web")

T = TypeVar("T")

_LOG_EVERY_SECONDS = 10.0


class Unavailable(Exception):
    """The database did not answer in time, or not at all: the request gets the 503 page."""


class Gate:
    """Turns at the database for reads and for writes, each bounded in time."""

    def __init__(self, limits: Limits) -> None:
        self._wait = limits.database_wait
        self._reads = anyio.Semaphore(limits.database_readers)
        self._writes = anyio.Semaphore(limits.database_writers)
        # Threads of its own: Starlette's shared pool (40) stays free for everything else.
        self._threads = anyio.CapacityLimiter(limits.database_readers + limits.database_writers)
        self._busy = OncePer(_LOG_EVERY_SECONDS)
        self._down = OncePer(_LOG_EVERY_SECONDS)

    async def read(self, work: Callable[[str], T], token: str) -> T:
        return await self._run(self._reads, work, token)

    async def write(self, work: Callable[[str], T], token: str) -> T:
        return await self._run(self._writes, work, token)

    async def _run(self, turns: anyio.Semaphore, work: Callable[[str], T], token: str) -> T:
        try:
            with anyio.fail_after(self._wait):
                await turns.acquire()
        except TimeoutError:
            self._log_busy()
            raise Unavailable from None
        try:
            # Not cancelled once started: a write that went through is answered as such.
            return await anyio.to_thread.run_sync(work, token, limiter=self._threads)
        except PoolTimeout as exc:  # cannot happen with the turns above; never a traceback
            self._log_busy()
            raise Unavailable from exc
        except MailerError as exc:
            if waits_for_lock(exc):
                self._log_busy()
            elif (quiet := self._down.due()) is not None:
                log.error("database unavailable: %s; answering 503%s", exc.message,
                          OncePer.more(quiet))
            raise Unavailable from exc
        finally:
            turns.release()

    def _log_busy(self) -> None:
        if (quiet := self._busy.due()) is not None:
            log.warning("database busy: requests waited more than %g s for it (another "
                        "process holds its write lock); answering 503 with Retry-After: %d%s",
                        self._wait, RETRY_AFTER_SECONDS, OncePer.more(quiet))
