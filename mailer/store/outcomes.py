"""Each attempt's outcome: recorded by compare-and-set and logged, read back as report rows.

A result is recorded only while the worker still holds the delivery's lease: the UPDATE names
the state it expects and the lease owner, so a slow worker can never overwrite a row that
another one has taken over since. Each one also appends a line to the attempts log, and a
hard bounce marks its subscriber `bounced`. `report_rows` reads them back for `mailer report`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    func,
    insert,
    select,
    update,
)

from mailer.core.states import DeliveryState, SubscriberStatus
from mailer.store.models import Attempt, Bounce, Delivery, Subscriber, UTCDateTime

S = DeliveryState
ACTIVE = SubscriberStatus.ACTIVE.value
_DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]
_ATTEMPTS: Table = Attempt.__table__  # type: ignore[assignment]


# --- record --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """The outcome of one attempt, to be recorded."""

    delivery_id: int
    state: DeliveryState  # SENT, DEFERRED, FAILED or UNCERTAIN
    at: datetime
    code: int | None
    reply: str
    next_attempt_at: datetime | None = None
    subscriber_id: int | None = None  # set to mark this subscriber bounced
    # False: the relay refused for its own budget. The delivery goes back to `state` (where it
    # was claimed from) with no attempt counted; the attempts log keeps the relay's words.
    charged: bool = True


RETURNED = "returned"  # the attempts log's outcome for a reply that charged nobody


# Only while this worker still holds the delivery (see the module docstring).
_HELD = (
    _DELIVERIES.c.id == bindparam("b_id"),
    _DELIVERIES.c.state == S.SENDING.value,
    _DELIVERIES.c.lease_owner == bindparam("b_owner"),
)
_RECORD = (
    update(_DELIVERIES)
    .where(*_HELD)
    .values(
        state=bindparam("b_state"),
        attempts=_DELIVERIES.c.attempts + 1,
        first_attempt_at=func.coalesce(_DELIVERIES.c.first_attempt_at, bindparam("b_at")),
        last_code=bindparam("b_code"),
        last_reply=bindparam("b_reply"),
        sent_at=bindparam("b_sent_at"),
        next_attempt_at=bindparam("b_next"),
        lease_owner=None,
        lease_expires_at=None,
        updated_at=bindparam("b_at"),
    )
)


_RETURN = (  # a reply that charged nobody: back where it was claimed from, no attempt
    update(_DELIVERIES)
    .where(*_HELD)
    .values(
        state=bindparam("b_state"),
        last_code=bindparam("b_code"),
        last_reply=bindparam("b_reply"),
        lease_owner=None,
        lease_expires_at=None,
        updated_at=bindparam("b_at"),
    )
)


# The attempt, for a delivery that still exists: one erased (`subscribers forget`) while it
# was being sent has nothing left to log against.
_LOG = insert(_ATTEMPTS).from_select(
    ["delivery_id", "at", "worker", "outcome", "code", "reply", "relay"],
    select(
        _DELIVERIES.c.id,
        bindparam("a_at", type_=UTCDateTime()),
        bindparam("a_worker", type_=String()),
        bindparam("a_outcome", type_=String()),
        bindparam("a_code", type_=Integer()),
        bindparam("a_reply", type_=Text()),
        bindparam("a_relay", type_=String()),
    ).where(_DELIVERIES.c.id == bindparam("a_id")),
)


def record(connection: Connection, owner: str, results: Sequence[Result],
           relay: str | None = None) -> None:
    """Store a batch of outcomes and append them to the attempts log (naming the `relay` they
    went through); one transaction."""
    if not results:
        return
    charged = [r for r in results if r.charged]
    returned = [r for r in results if not r.charged]
    if returned:
        connection.execute(_RETURN, [
            {"b_id": r.delivery_id, "b_owner": owner, "b_state": r.state.value, "b_at": r.at,
             "b_code": r.code, "b_reply": r.reply}
            for r in returned
        ])
    if charged:
        _record_charged(connection, owner, charged)
    connection.execute(_LOG, [
        {"a_id": r.delivery_id, "a_at": r.at, "a_worker": owner,
         "a_outcome": r.state.value if r.charged else RETURNED,
         "a_code": r.code, "a_reply": r.reply, "a_relay": relay}
        for r in results
    ])
    bounced = sorted({r.subscriber_id for r in charged if r.subscriber_id is not None})
    if bounced:
        now = max(r.at for r in results)
        connection.execute(
            update(Subscriber)
            .where(Subscriber.id.in_(bounced), Subscriber.status == ACTIVE)
            .values(status=SubscriberStatus.BOUNCED.value, status_changed_at=now, updated_at=now)
        )


def _record_charged(connection: Connection, owner: str, results: Sequence[Result]) -> None:
    connection.execute(
        _RECORD,
        [
            {
                "b_id": r.delivery_id,
                "b_owner": owner,
                "b_state": r.state.value,
                "b_at": r.at,
                "b_code": r.code,
                "b_reply": r.reply,
                "b_sent_at": r.at if r.state is S.SENT else None,
                "b_next": r.next_attempt_at,
            }
            for r in results
        ],
    )


# --- the report ----------------------------------------------------------------------------


def report_rows(
    connection: Connection, campaign_id: int, states: Sequence[DeliveryState]
) -> Iterator[Any]:
    """Deliveries in these states with their subscriber, streamed in subscriber order."""
    query = (
        select(
            Subscriber.email,
            Subscriber.first_name,
            Subscriber.last_name,
            Subscriber.status.label("subscriber_status"),
            Delivery.state,
            Delivery.attempts,
            Delivery.last_code,
            Delivery.last_reply,
            Delivery.first_attempt_at,
            select(func.max(Attempt.at)).where(Attempt.delivery_id == Delivery.id)
            .scalar_subquery().label("last_attempt_at"),
            Delivery.next_attempt_at,
            Delivery.sent_at,
            Delivery.message_id,
            # the latest bounce report's reason ("mailbox unknown", "complaint"...)
            select(Bounce.reason).where(Bounce.delivery_id == Delivery.id)
            .order_by(Bounce.id.desc()).limit(1)
            .scalar_subquery().label("bounce_reason"),
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.campaign_id == campaign_id,
               Delivery.state.in_([state.value for state in states]))
        .order_by(Subscriber.id)
    )
    yield from connection.execution_options(yield_per=1000).execute(query)
