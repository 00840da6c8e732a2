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
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from mailer.core.delivery import Reply, Stage

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
# RFC 3463 statuses that say the recipient's address does not exist: the subscriber is marked
# bounced. Not the rest of 5.1.x: 5.1.0, 5.1.7 and 5.1.8 are about the sender.
BAD_MAILBOX = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"})
JITTER = 0.1  # up to +10 % on each delay, so deferred deliveries do not all return at once


class Outcome(StrEnum):
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    UNCERTAIN = "uncertain"
    REQUEUED = "requeued"


@dataclass(frozen=True)
class Backoff:
    """When to try a temporarily failed delivery again, and when to give up (seconds)."""

    base: float = 300.0  # first retry after 5 minutes
    cap: float = 14400.0  # doubling, capped at 4 hours
    max_age: float = 345600.0  # give up 4 days after the first attempt

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


def enhanced_status(text: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of a reply text (`5.1.1`), if any."""
    match = _ENHANCED.match(text)
    return ".".join(match.groups()) if match else None


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


# A permanent bounce report (`mailer bounces import`) comes from the recipient's side, after
# the relay accepted the message: it marks the subscriber bounced unless its status says the
# failure was about the message or its sender rather than the mailbox. RFC 3463 classes:
# 5.3 mail system (message too big...), 5.5 protocol, 5.6 content, 5.7 security or policy
# (spam filters, DMARC, blocked sender); 5.1.7 and 5.1.8 name the sender's address; 5.2.2
# (mailbox full) and 5.2.3 (message too long for it) leave an address that works: the
# delivery failed, the subscriber stays (as a 552 at RCPT is only deferred when sending).
_ABOUT_MESSAGE = ("5.3.", "5.5.", "5.6.", "5.7.")
_ABOUT_SENDER = frozenset({"5.1.7", "5.1.8", "5.2.2", "5.2.3"})


def bounce_marks_subscriber(status: str | None) -> bool:
    """True when a permanent bounce with this status means the address no longer works.

    No status at all (a provider's plain-text notice) counts as the mailbox's failure: it is
    how the old formats report an unknown user.
    """
    if status is None:
        return True
    return not (status.startswith(_ABOUT_MESSAGE) or status in _ABOUT_SENDER)
