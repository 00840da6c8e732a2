"""A dispatcher's terms: how it is to send (RunOptions, the rate limiter) and the account it
gives back (Tally, passed to a ProgressFn after each flush).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailer.core.budget import Window
from mailer.core.config import Rate, Settings
from mailer.sending.policy import Backoff, Outcome

# RunOptions' defaults are the settings' defaults, written once, in Settings.
_DEFAULTS = Settings()
_DEFAULT_BACKOFF = Backoff.from_settings(_DEFAULTS)


@dataclass
class Tally:
    """What this run did, for the progress bar and the summary."""

    total: int = 0  # deliveries due when the run started (the progress bar's length)
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    uncertain: int = 0
    skipped: int = 0
    released: int = 0
    requeued: int = 0
    lost: int = 0  # claimed, then not sent: the lease ran out first (a paused process)
    returned: int = 0  # refused for the relay's budget: back to waiting, no attempt counted
    slowdowns: int = 0  # the relay said slow down (421, 4.7.x, a refused extra connection)
    # Why sending stopped short of the end, if it did: "window" (a declared window is full),
    # "paused" (the relay is paused), "refused" (the relay refused in this run; an error
    # follows); until when (ISO), and which relay.
    wait: str = ""
    wait_until: str = ""
    wait_relay: str = ""
    notes: list[str] = field(default_factory=list)  # said once the run is over
    started: float = 0.0
    interrupted: bool = False
    signal: int = 0  # the signal that stopped the run (SIGINT, SIGTERM), if any

    @property
    def done(self) -> int:
        return self.sent + self.deferred + self.failed + self.uncertain + self.skipped

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started if self.started else 0.0

    def count(self, outcome: Outcome) -> None:
        name = outcome.value
        setattr(self, name, getattr(self, name) + 1)

    def add(self, other: Tally) -> None:
        """Another dispatcher's account (another relay's, another process's) into this one."""
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.interrupted = self.interrupted or other.interrupted
        self.signal = self.signal or other.signal
        if WAITS.index(other.wait) > WAITS.index(self.wait):
            self.wait, self.wait_until, self.wait_relay = (
                other.wait, other.wait_until, other.wait_relay
            )
        self.notes += [note for note in other.notes if note not in self.notes]


COUNTS = ("sent", "deferred", "failed", "uncertain", "skipped", "released", "requeued", "lost",
          "returned", "slowdowns")
WAITS = ("", "window", "paused", "refused")  # the more telling one wins when tallies merge


ProgressFn = Callable[[Tally], None]


class RateLimiter:
    """At most `rate` message starts per second, spread evenly (no bursts)."""

    def __init__(self, rate: Rate | None) -> None:
        self.interval = 1.0 / rate.per_second if rate else 0.0
        self._next = 0.0

    async def wait(self, stop: asyncio.Event, pace: float = 1.0) -> None:
        """Until this message's slot, or until `stop` is set; `pace` < 1 slows it down."""
        if not self.interval:
            return
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + self.interval / max(pace, 0.01)
        if start > now:
            await sleep_unless(stop, start - now)


@dataclass(frozen=True)
class RunOptions:
    """How one dispatcher sends: `from_settings` for a run, field by field in tests."""

    concurrency: int = _DEFAULTS.concurrency
    rate: Rate | None = _DEFAULTS.rate
    limit: int | None = None  # send at most this many deliveries in this run
    include_uncertain: bool = _DEFAULTS.uncertain == "resend"
    lease_seconds: float = _DEFAULTS.lease_seconds
    backoff: Backoff = _DEFAULT_BACKOFF
    batch_size: int = 200
    throttle_pause: float = 1.0  # first pause after a throttling reply; doubles, ≤ 30 s
    bounce_address: str | None = None  # VERP: each envelope sender is LOCAL+TOKEN@domain
    relay: str | None = None  # the relay's name: its pause, its windows, the attempts log
    windows: tuple[Window, ...] = ()  # declared windows (quota, rate) held in the ledger
    quota_cooldown: float = _DEFAULTS.quota_cooldown

    @classmethod
    def from_settings(
        cls, settings: Settings, *, limit: int | None, bounce_address: str | None
    ) -> RunOptions:
        return cls(
            concurrency=settings.concurrency,
            rate=settings.rate,
            limit=limit,
            include_uncertain=settings.uncertain == "resend",
            lease_seconds=settings.lease_seconds,
            backoff=Backoff.from_settings(settings),
            bounce_address=bounce_address,
            quota_cooldown=settings.quota_cooldown,
        )


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake up as soon as `stop` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
