"""Every SQL statement of `mailer bounces import`: find what a bounce is about, record it.

A bounce report is matched, most trusted first, by the Message-ID mailer gave the original
message (fixed when the delivery was queued), by a VERP token, then by the failed recipient's
address (that subscriber's most recent delivery). Each report is stored once under its key, so
importing the same mailbox again finds every report already here and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select, update

from mailer.models import Bounce, Delivery, Subscriber
from mailer.states import DeliveryState, SubscriberStatus, origins_of
from mailer.store.engine import dialect_insert
from mailer.store.subscribers import set_status

S = DeliveryState
_FAILABLE = sorted(state.value for state in origins_of(S.FAILED) if state is not S.SENDING)


@dataclass(frozen=True)
class Target:
    """What a bounce report is about: a subscriber, and their delivery when one is known."""

    subscriber_id: int
    email_key: str
    delivery_id: int | None


def by_message_ids(connection: Connection, message_ids: Sequence[str]) -> Target | None:
    """The delivery that carried one of these Message-IDs (the first one that matches)."""
    if not message_ids:
        return None
    rows = connection.execute(
        select(Delivery.id, Delivery.message_id, Subscriber.id.label("sid"), Subscriber.email_key)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.message_id.in_(list(message_ids)))
    ).all()
    found = {row.message_id: row for row in rows}
    for message_id in message_ids:
        row = found.get(message_id)
        if row is not None:
            return Target(row.sid, row.email_key, row.id)
    return None


def by_subscriber(connection: Connection, subscriber_id: int) -> Target | None:
    """A subscriber named by a verified token, with their most recent delivery."""
    row = connection.execute(
        select(Subscriber.id, Subscriber.email_key).where(Subscriber.id == subscriber_id)
    ).first()
    return _with_latest_delivery(connection, row.id, row.email_key) if row else None


def by_address(connection: Connection, email_key: str) -> Target | None:
    """The subscriber with this address, with their most recent delivery."""
    row = connection.execute(
        select(Subscriber.id, Subscriber.email_key).where(Subscriber.email_key == email_key)
    ).first()
    return _with_latest_delivery(connection, row.id, row.email_key) if row else None


def _with_latest_delivery(connection: Connection, subscriber_id: int, email_key: str) -> Target:
    # The last one that went out (or may have): that is the message a bounce comes back for.
    delivery_id = connection.scalar(
        select(Delivery.id)
        .where(
            Delivery.subscriber_id == subscriber_id,
            Delivery.state.in_([S.SENT.value, S.UNCERTAIN.value, S.FAILED.value]),
        )
        .order_by(Delivery.sent_at.desc().nulls_last(), Delivery.id.desc())
        .limit(1)
    )
    return Target(subscriber_id, email_key, delivery_id)


@dataclass(frozen=True)
class Recorded:
    new: bool  # False: this report was already imported; nothing was changed
    delivery_failed: bool = False
    subscriber_bounced: bool = False


def record(
    connection: Connection,
    *,
    key: str,
    target: Target | None,
    permanent: bool,
    marks_subscriber: bool,
    status: str | None,
    code: int | None,
    diagnostic: str,
    format: str,
    reported_at: datetime | None,
    now: datetime,
) -> Recorded:
    """Store one report; for a permanent one, fail the delivery and bounce the subscriber.

    A temporary report (a delay notice) is stored and changes no state. The delivery's state
    changes by compare-and-set, from the states a bounce may leave: a delivery being sent right
    now is left to its sender.
    """
    inserted = connection.execute(
        dialect_insert(connection)(Bounce)
        .values(
            key=key,
            delivery_id=target.delivery_id if target else None,
            subscriber_id=target.subscriber_id if target else None,
            severity="permanent" if permanent else "temporary",
            status=status,
            diagnostic=diagnostic,
            format=format[:32],
            reported_at=reported_at,
            imported_at=now,
        )
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(Bounce.id)
    ).first()
    if inserted is None:
        return Recorded(new=False)
    if target is None or not permanent:
        return Recorded(new=True)
    failed = False
    if target.delivery_id is not None:
        failed = bool(
            connection.execute(
                update(Delivery)
                .where(Delivery.id == target.delivery_id, Delivery.state.in_(_FAILABLE))
                .values(
                    state=S.FAILED.value,
                    last_code=code,
                    last_reply=f"bounce: {diagnostic}"[:2000],
                    next_attempt_at=None,
                    updated_at=now,
                )
            ).rowcount
        )
    bounced = marks_subscriber and (
        set_status(connection, target.email_key, SubscriberStatus.BOUNCED, now) is not None
    )
    return Recorded(new=True, delivery_failed=failed, subscriber_bounced=bounced)
