"""Subscriber statuses, delivery states and the one table of allowed delivery transitions."""

from __future__ import annotations

from enum import StrEnum


class SubscriberStatus(StrEnum):
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    UNCERTAIN = "uncertain"
    FAILED = "failed"
    SKIPPED = "skipped"


S = DeliveryState

# The single source of truth for the delivery state machine: every UPDATE of a delivery's
# state is a compare-and-set from one of these origins (see docs/architecture.md).
TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    S.PENDING: frozenset({S.SENDING, S.SKIPPED}),
    S.SENDING: frozenset({S.SENT, S.DEFERRED, S.FAILED, S.UNCERTAIN, S.SKIPPED, S.PENDING}),
    S.DEFERRED: frozenset({S.SENDING, S.SKIPPED, S.FAILED}),
    # A bounce report proves a message went out and came back: `mailer bounces import` moves
    # an uncertain or sent delivery to failed. Nothing else ever leaves sent.
    S.UNCERTAIN: frozenset({S.SENDING, S.SENT, S.SKIPPED, S.FAILED}),
    S.SENT: frozenset({S.FAILED}),
    S.FAILED: frozenset(),
    S.SKIPPED: frozenset(),
}

TERMINAL: frozenset[DeliveryState] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
# Never sent (again): a delivery in one of these states is never claimed.
DONE: frozenset[DeliveryState] = TERMINAL | {S.SENT}


def can_transition(origin: DeliveryState, target: DeliveryState) -> bool:
    """True when the state machine allows `origin` -> `target`."""
    return target in TRANSITIONS[origin]


def origins_of(target: DeliveryState) -> frozenset[DeliveryState]:
    """Every state from which `target` may be reached: the WHERE of a compare-and-set."""
    return frozenset(s for s, nxt in TRANSITIONS.items() if target in nxt)
