"""One dispatcher's dealings with its relay's budget: its declared windows (an `Allowance`),
the refusal that stops the run, and what the ledger is told after the run (the relay paused
with its cool-down, a full window noted, the strikes reset after an acceptance). Also the waits
a delivery's give-up age leaves out.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial

from mailer.core.clock import Clock
from mailer.core.errors import RelayRefusedError
from mailer.sending.allowance import Allowance
from mailer.sending.options import RunOptions, Tally
from mailer.sending.policy import waited
from mailer.sending.recorder import Recorder
from mailer.sending.refusals import Refusal
from mailer.store import pauses, slots


class BudgetWatch:
    """The relay `relay` (its name in the ledger), described as `description` in messages."""

    def __init__(self, relay: str, description: str, options: RunOptions, recorder: Recorder,
                 clock: Clock) -> None:
        self.relay = relay
        self.description = description
        self.options = options
        self.recorder = recorder
        self.clock = clock
        self.allowance = (
            Allowance(recorder, relay, options.windows, clock, concurrency=options.concurrency)
            if options.windows else None
        )
        self.refusal: tuple[Refusal, str] | None = None  # the first, in the relay's words
        self._waits: list[tuple[datetime, datetime]] = []

    def _horizon(self) -> datetime:
        """Waits that ended before this concern no delivery still being tried."""
        return self.clock() - timedelta(seconds=self.options.backoff.max_age * 4)

    async def load_waits(self) -> None:
        self._waits = await self.recorder.in_db(partial(pauses.waits, since=self._horizon()))

    def age_start(self, first: datetime, now: datetime) -> datetime:
        """When a delivery first tried at `first` started aging: later by the time spent
        waiting for a budget since."""
        return first + timedelta(seconds=waited(self._waits, first, now))

    def refused(self, kind: Refusal, reply: str) -> None:
        if self.refusal is None:
            self.refusal = (kind, reply)

    async def settle(self, tally: Tally) -> RelayRefusedError | None:
        """After the run: give back unused slots, note a full window, reset the strikes after
        an acceptance, pause a relay that refused (the error to raise)."""
        now = self.clock()
        if self.allowance is not None:
            await self.allowance.close()
            until = self.allowance.full_until
            if until is not None and self.refusal is None:
                tally.wait, tally.wait_until, tally.wait_relay = (
                    "window", until.isoformat(), self.relay
                )
                await self.recorder.in_db(partial(
                    pauses.note_wait, relay=self.relay, start=now, end=until, reason="window"
                ))
                await self.recorder.in_db(partial(pauses.forget_waits, before=self._horizon()))
        if tally.sent:
            await self.recorder.in_db(partial(pauses.accepted, relay=self.relay, now=now))
        if self.refusal is None:
            return None
        kind, reply = self.refusal
        window_end = None
        if self.options.windows:
            uses = await self.recorder.in_db(partial(
                slots.usage, relay=self.relay, windows=self.options.windows, now=now
            ))
            window_end = max((u.next_slot_at for u in uses if u.next_slot_at), default=None)
        pause = await self.recorder.in_db(partial(
            pauses.pause, relay=self.relay, now=now, cooldown=self.options.quota_cooldown,
            reason=reply, at_least=window_end,
        ))
        tally.wait, tally.wait_until, tally.wait_relay = (
            "refused", pause.until.isoformat(), self.relay
        )
        what = "refuses: quota" if kind is Refusal.BUDGET else "keeps throttling"
        return RelayRefusedError(
            f"the relay {self.description} {what} ({reply}); nothing was marked failed; next "
            f"try at {pause.until:%Y-%m-%d %H:%M:%S} UTC",
            kind=kind.value, reply=reply,
            hint="the relay is paused until then: `mailer retry` (cron) goes on after it; "
            "declare its budget (MAILER_QUOTA) to stay under it",
        )
