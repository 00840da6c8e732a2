"""This process's slots in one relay's declared windows (MAILER_QUOTA, and MAILER_RATE held
across processes): one taken per message, reserved from the ledger in blocks.

Blocks keep the database out of the hot path: a block of N slots costs one transaction, its
size grows while blocks run out before their time and shrinks when they do not, and it never
exceeds a tenth of the smallest window, so what one process holds unused is small. What a block
did not use is given back (mailer.store.slots). A full window is waited for when its next slot
opens within `max_wait`; otherwise `take` says no and `full_until` says when to come back.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from functools import partial

from mailer.core.budget import Window
from mailer.core.clock import Clock
from mailer.sending.options import sleep_unless
from mailer.sending.recorder import Recorder
from mailer.store import slots

MAX_WAIT = 90.0  # seconds: a slot opening sooner is waited for within the run
MAX_BLOCK = 500


class Allowance:
    """Slots in `windows` of `relay`, for one dispatcher."""

    def __init__(
        self,
        recorder: Recorder,
        relay: str,
        windows: tuple[Window, ...],
        clock: Clock,
        *,
        concurrency: int,
        max_wait: float = MAX_WAIT,
    ) -> None:
        self.recorder = recorder
        self.relay = relay
        self.windows = windows
        self.clock = clock
        self.max_wait = max_wait
        smallest = min(window.limit for window in windows)
        self.cap = max(1, min(MAX_BLOCK, smallest // 10))
        self.hold = min(5.0, min(window.seconds for window in windows) / 20)
        self.full_until: datetime | None = None  # set when `take` says no
        self.blocks = 0  # reservations made (for tests and the benchmark)
        self._want = max(1, min(self.cap, concurrency))
        self._left = 0
        self._slot: int | None = None
        self._until: datetime | None = None
        self._lock = asyncio.Lock()

    async def take(self, stop: asyncio.Event) -> bool:
        """One slot for one message now; False when the windows are full for longer than
        `max_wait` (see `full_until`) or the run is stopping."""
        async with self._lock:
            while not stop.is_set():
                now = self.clock()
                if self._left > 0 and self._until is not None and now < self._until:
                    self._left -= 1
                    return True
                ran_out = self._left == 0 and self._slot is not None
                await self._return(now)
                self._want = (min(self.cap, self._want * 2) if ran_out
                              else max(1, self._want // 2))
                reservation = await self.recorder.in_db(partial(
                    slots.reserve, relay=self.relay, windows=self.windows, now=now,
                    want=self._want, hold=self.hold,
                ))
                self.blocks += 1
                if reservation.granted:
                    self._slot, self._left = reservation.slot_id, reservation.granted
                    self._until = reservation.until
                    continue
                opens = reservation.next_slot_at or now
                wait = (opens - now).total_seconds()
                if wait > self.max_wait:
                    self.full_until = opens
                    return False
                await sleep_unless(stop, max(wait, 0.05))
            return False

    async def close(self) -> None:
        """Give back what the current block did not use."""
        async with self._lock:
            await self._return(self.clock())

    async def _return(self, now: datetime) -> None:
        slot, unused = self._slot, self._left
        self._slot, self._left, self._until = None, 0, None
        if slot is not None:
            await self.recorder.in_db(partial(slots.give_back, slot_id=slot, unused=unused,
                                              now=now))
