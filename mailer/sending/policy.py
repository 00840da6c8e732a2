"""Pure decisions about one SMTP outcome: which state a delivery goes to, and when to try again.

    reply                                   outcome
    2xx after the final "."                 sent
    no reply after the final "."            uncertain  (the relay may have accepted it)
    no reply before the final "."           deferred   (disconnect, timeout: nothing was accepted)
    421 at any stage                        requeued   (the relay is closing the session: the
                                                        message is tried again in this run on a
                                                        new connection; no attempt is counted)
    4xx, and 552 on RCPT (RFC 5321 4.5.3.1.10: "mailbox full" there is temporary)
                                            deferred   (next try after the backoff), or failed
                                                        once the first attempt is older than
                                                        the give-up age
    5xx                                     failed     (5.1.1, 5.1.2, 5.1.3, 5.1.6, 5.1.10 —
                                                        no such mailbox or domain — also mark
                                                        the subscriber bounced, unless the
                                                        reply speaks of the sender)

A 421 or an enhanced status 4.7.x is throttling: the dispatcher counts them in a row and stops
the whole run (exit 75) when the relay keeps throttling, before any subscriber pays for it.
No I/O here; time and randomness are passed in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from mailer.core.config import Settings
from mailer.core.delivery import Reply, Stage
from mailer.core.statuscodes import BAD_MAILBOX, enhanced_status

JITTER = 0.1  # up to +10 % on each delay, so deferred deliveries do not all return at once


class Outcome(StrEnum):
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    UNCERTAIN = "uncertain"
    REQUEUED = "requeued"


@dataclass(frozen=True)
class Backoff:
    """When to try a temporarily failed delivery again, and when to give up (seconds).

    No defaults here: they are Settings' (retry_base_delay, retry_max_delay, retry_max_age).
    """

    base: float  # the first retry, this long after the first attempt
    cap: float  # the delay doubles with each attempt, up to this
    max_age: float  # give up this long after the first attempt

    @classmethod
    def from_settings(cls, settings: Settings) -> Backoff:
        return cls(settings.retry_base_delay, settings.retry_max_delay, settings.retry_max_age)

    def delay(self, attempts: int, rng: random.Random) -> float:
        """The wait after the `attempts`-th try (1, 2, ...): base, 2×base, … ≤ cap, plus jitter."""
        exponent = min(max(attempts - 1, 0), 32)
        delay = min(self.cap, self.base * 2.0**exponent)
        return float(delay * (1 + JITTER * rng.random()))


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    bounce: bool = False  # mark the subscriber bounced (5.1.x: the address does not exist)
    throttle: bool = False  # a throttling reply (421, 4.7.x)
    next_attempt_at: datetime | None = None  # for DEFERRED


def is_throttling(reply: Reply) -> bool:
    status = enhanced_status(reply.text) or ""
    return reply.code == 421 or (reply.code is not None and status.startswith("4.7."))


def decide(
    reply: Reply,
    *,
    attempts: int,
    first_attempt_at: datetime,
    now: datetime,
    backoff: Backoff,
    rng: random.Random,
) -> Decision:
    """The outcome of one attempt; `attempts` counts this one, `first_attempt_at` the first."""
    if reply.accepted:
        return Decision(Outcome.SENT)
    code = reply.code
    if code is None:
        if reply.stage is Stage.DATA_END:
            return Decision(Outcome.UNCERTAIN)
        return _temporary(attempts, first_attempt_at, now, backoff, rng, throttle=False)
    if code == 421:
        return Decision(Outcome.REQUEUED, throttle=True)
    if 200 <= code < 300:
        # A 2xx before the end of DATA is not an acceptance of the message: the transport
        # only reports one if the relay broke the protocol. Nothing was accepted.
        return _temporary(attempts, first_attempt_at, now, backoff, rng, throttle=False)
    if 400 <= code < 500 or (code == 552 and reply.stage is Stage.RCPT):
        return _temporary(
            attempts, first_attempt_at, now, backoff, rng, throttle=is_throttling(reply)
        )
    status = enhanced_status(reply.text) or ""
    about_sender = "sender" in reply.text.lower()
    return Decision(Outcome.FAILED, bounce=status in BAD_MAILBOX and not about_sender)


def waited(waits: list[tuple[datetime, datetime]], since: datetime, now: datetime) -> float:
    """Seconds between `since` and `now` spent waiting for a relay's budget (paused, or a
    window full): the union of `waits`, clipped. A give-up age does not count them."""
    total, reached = 0.0, since
    for start, end in sorted(waits):
        start, end = max(start, reached), min(end, now)
        if end > start:
            total += (end - start).total_seconds()
            reached = end
    return total


def _temporary(
    attempts: int,
    first_attempt_at: datetime,
    now: datetime,
    backoff: Backoff,
    rng: random.Random,
    *,
    throttle: bool,
) -> Decision:
    deadline = first_attempt_at + timedelta(seconds=backoff.max_age)
    if now >= deadline:
        return Decision(Outcome.FAILED, throttle=throttle)
    when = now + timedelta(seconds=backoff.delay(attempts, rng))
    # One last try at the deadline rather than none after it.
    return Decision(Outcome.DEFERRED, throttle=throttle, next_attempt_at=min(when, deadline))
