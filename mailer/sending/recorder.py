"""The database side of one dispatcher: the deliveries it holds and until when their leases
run, the outcomes waiting for their commit, and the one thread every database call runs on.

A dedicated thread, so a slow commit never stalls an SMTP timer. A delivery is `sending`
(committed) before its DATA, and its outcome is committed within `FLUSH_SECONDS` of the
relay's reply: a crash can leave at most the messages being transmitted plus those
acknowledged in the last flush interval without their record.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Engine

from mailer.core.clock import Clock
from mailer.core.delivery import Reply, Stage
from mailer.core.leases import lease_owner
from mailer.core.states import DeliveryState
from mailer.store import claims, outcomes
from mailer.store.engine import write_transaction

T = TypeVar("T")
FLUSH_SECONDS = 0.1  # outcomes are committed at most this long after the relay's reply
UNRECORDED_LIMIT = 1000  # senders wait while this many replies await their commit (slow DB)


def worker_name() -> str:
    """Who holds a lease: host, process and a random suffix (pids are reused); read back by
    mailer.core.leases.describe_owner for `mailer status`."""
    return f"{lease_owner()}:{secrets.token_hex(3)}"


class Recorder:
    """What one worker (`owner`) claimed, holds and has heard, until it is committed."""

    def __init__(self, engine: Engine, owner: str, clock: Clock, lease_seconds: float,
                 relay: str | None = None) -> None:
        self.engine = engine
        self.relay = relay  # named in the attempts log
        self.owner = owner
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.held: dict[int, DeliveryState] = {}  # claimed and not yet recorded: its origin
        # When each held delivery's lease ends, as far as this worker knows: it is never sent
        # once that is near, since another worker may have taken it over (a process paused
        # longer than its lease, say). Moved on by each renewal that finds it still ours.
        self._lease_ends: dict[int, datetime] = {}
        self._results: list[outcomes.Result] = []
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailer-db")

    async def in_db(self, work: Callable[[Any], T]) -> T:
        """`work(connection)` in one write transaction, on the database thread."""

        def run() -> T:
            with write_transaction(self.engine) as connection:
                return work(connection)

        return await asyncio.get_running_loop().run_in_executor(self._db, run)

    def close(self) -> None:
        self._db.shutdown(wait=True)

    # --- holding ---------------------------------------------------------------------------

    async def claim(
        self, campaign_id: int, *, limit: int, include_uncertain: bool
    ) -> claims.ClaimResult:
        """Lease up to `limit` due deliveries to this worker; hold them until recorded."""
        now = self.clock()
        result = await self.in_db(partial(
            claims.claim, campaign_id=campaign_id, owner=self.owner, now=now,
            lease_seconds=self.lease_seconds, limit=limit, include_uncertain=include_uncertain,
        ))
        lease_ends = now + timedelta(seconds=self.lease_seconds)
        for item in result.claimed:
            self.held[item.delivery_id] = item.origin
            self._lease_ends[item.delivery_id] = lease_ends
        return result

    def still_ours(self, item: claims.Claimed) -> bool:
        """Whether the lease leaves time to send it: a margin of a tenth of the lease
        (at most 30 s) before it ends, for the transaction itself."""
        margin = timedelta(seconds=min(30.0, self.lease_seconds / 10))
        ends = self._lease_ends.get(item.delivery_id)
        return ends is not None and self.clock() + margin < ends

    async def renew(self) -> None:
        now = self.clock()
        ours = await self.in_db(partial(
            claims.renew_leases, owner=self.owner, now=now, lease_seconds=self.lease_seconds
        ))
        ends = now + timedelta(seconds=self.lease_seconds)
        for delivery_id in list(self._lease_ends):
            if delivery_id in ours:
                self._lease_ends[delivery_id] = ends
            elif delivery_id in self.held:
                # Taken over: not ours to send, record or release any more.
                del self._lease_ends[delivery_id]
                del self.held[delivery_id]

    async def release_unanswered(self) -> int:
        """Put back what was held and not answered, with no attempt counted; how many.

        A reply that could not be recorded keeps its delivery `sending`: the lease then makes
        it `uncertain`. It is never released as if it had not been tried.
        """
        answered = {result.delivery_id for result in self._results}
        held = [(i, origin) for i, origin in self.held.items() if i not in answered]
        try:
            if not held:
                return 0
            now = self.clock()
            return await self.in_db(lambda c: claims.release(c, self.owner, held, now))
        finally:
            self.held.clear()

    # --- recording -------------------------------------------------------------------------

    @property
    def backed_up(self) -> bool:
        """Too many replies wait for their commit: the database is slow, senders wait."""
        return len(self._results) >= UNRECORDED_LIMIT

    def add(
        self,
        item: claims.Claimed,
        state: DeliveryState,
        code: int | None,
        reply: str,
        now: datetime,
        *,
        next_attempt_at: datetime | None = None,
        bounce: bool = False,
        charged: bool = True,
    ) -> None:
        """One outcome, committed by the next flush; `charged=False`: back to `state` (where
        it was claimed from) with no attempt counted."""
        self._results.append(outcomes.Result(
            item.delivery_id, state, now, code, reply, next_attempt_at,
            item.recipient.id if bounce else None, charged,
        ))

    async def flush(self) -> None:
        if not self._results:
            return
        batch, self._results = self._results, []
        try:
            await self.in_db(lambda c: outcomes.record(c, self.owner, batch, self.relay))
        except BaseException:
            self._results[:0] = batch  # not recorded: never released as untried
            raise
        for result in batch:
            self.held.pop(result.delivery_id, None)
            self._lease_ends.pop(result.delivery_id, None)


def describe(reply: Reply) -> str:
    """The reply as stored: `250 2.0.0 Ok: queued as ABC` or what happened instead."""
    if reply.code is None:
        where = "after the end of DATA" if reply.stage is Stage.DATA_END else f"at {reply.stage}"
        return f"no reply {where}: {reply.text}"
    return f"{reply.code} {reply.text}".strip()
