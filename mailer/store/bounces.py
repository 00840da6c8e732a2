"""Every SQL statement of `mailer bounces import`: find what a bounce is about, record it.

The lookups the trust model (`mailer.bounces.trust`) asks for: the delivery that carried a
Message-ID, a subscriber named by a verified VERP token with their latest delivery, a
subscriber by address with the delivery sent to them since a given time, the list's own
addresses, and how often a subscriber's reports repeated. Each report is stored once under its
key, so importing the same mailbox again finds every report already here and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, or_, select, update

from mailer.core.states import DeliveryState, SubscriberStatus, origins_of
from mailer.store.engine import dialect_insert
from mailer.store.models import Bounce, Campaign, Delivery, Subscriber
from mailer.store.subscribers import set_status

S = DeliveryState
_FAILABLE = sorted(state.value for state in origins_of(S.FAILED) if state is not S.SENDING)


@dataclass(frozen=True)
class Target:
    """What a bounce report is about: a subscriber, and their delivery when one is known."""

    subscriber_id: int
    email_key: str
    delivery_id: int | None


# Message-IDs per lookup, most trusted first: one bound parameter each, far below every
# database's limit (SQLite 32,766, PostgreSQL 65,535), however many a caller passes.
ID_CHUNK = 500

# Statements built once (a mailbox of bounces runs them for each report): the values travel
# as bind parameters, so each compiles once and is served from SQLAlchemy's cache.
_BY_MESSAGE_IDS = (
    select(Delivery.id, Delivery.message_id, Subscriber.id.label("sid"), Subscriber.email_key)
    .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
    .where(Delivery.message_id.in_(bindparam("b_ids", expanding=True)))
)
# A subscriber's last delivery that went out (or may have): the one a bounce comes back for.
_LATEST_DELIVERY = (
    select(Delivery.id)
    .where(
        Delivery.subscriber_id == Subscriber.id,
        Delivery.state.in_([S.SENT.value, S.UNCERTAIN.value, S.FAILED.value]),
    )
    .order_by(Delivery.sent_at.desc().nulls_last(), Delivery.id.desc())
    .limit(1)
    .correlate(Subscriber)
    .scalar_subquery()
)
_SUBSCRIBER = select(Subscriber.id, Subscriber.email_key, _LATEST_DELIVERY.label("delivery_id"))
_BY_ADDRESS = _SUBSCRIBER.where(Subscriber.email_key == bindparam("b_key"))
_BY_ID = _SUBSCRIBER.where(Subscriber.id == bindparam("b_id"))
_FAIL = (
    update(Delivery)
    .where(Delivery.id == bindparam("b_id"), Delivery.state.in_(_FAILABLE))
    .values(
        state=S.FAILED.value,
        last_code=bindparam("b_code"),
        last_reply=bindparam("b_reply"),
        next_attempt_at=None,
        updated_at=bindparam("b_now"),
    )
)


def by_message_ids(connection: Connection, message_ids: Sequence[str]) -> Target | None:
    """The delivery that carried one of these Message-IDs (the first one that matches)."""
    for start in range(0, len(message_ids), ID_CHUNK):
        chunk = list(message_ids[start : start + ID_CHUNK])
        rows = connection.execute(_BY_MESSAGE_IDS, {"b_ids": chunk}).all()
        found = {row.message_id: row for row in rows}
        for message_id in chunk:
            row = found.get(message_id)
            if row is not None:
                return Target(row.sid, row.email_key, row.id)
    return None


def by_subscriber(connection: Connection, subscriber_id: int) -> Target | None:
    """A subscriber named by a verified token, with their most recent delivery."""
    return _target(connection.execute(_BY_ID, {"b_id": subscriber_id}).first())


def by_address(connection: Connection, email_key: str) -> Target | None:
    """The subscriber with this address, with their most recent delivery."""
    return _target(connection.execute(_BY_ADDRESS, {"b_key": email_key}).first())


def _target(row: Any) -> Target | None:
    return Target(row.id, row.email_key, row.delivery_id) if row is not None else None


# The delivery a report tied by address alone may be about: one that went out (or may have)
# to this subscriber since the given time.
_SENT_SINCE = (
    select(Delivery.id)
    .where(
        Delivery.subscriber_id == bindparam("b_id"),
        Delivery.state.in_([S.SENT.value, S.UNCERTAIN.value, S.FAILED.value]),
        func.coalesce(Delivery.sent_at, Delivery.first_attempt_at) >= bindparam("b_since"),
    )
    .order_by(Delivery.sent_at.desc().nulls_last(), Delivery.id.desc())
    .limit(1)
)


def sent_since(connection: Connection, subscriber_id: int, since: datetime) -> int | None:
    """The subscriber's latest delivery that went out at `since` or later, or None."""
    found = connection.scalar(_SENT_SINCE, {"b_id": subscriber_id, "b_since": since})
    return int(found) if found is not None else None


def list_addresses(connection: Connection) -> set[str]:
    """Every address the list sends from (campaign senders, `Name <a@b>` or bare): never a
    failed recipient a report can name by address alone."""
    return {sender for sender in connection.scalars(select(Campaign.sender).distinct())
            if sender}


def repeats(
    connection: Connection, subscriber_id: int, reasons: Sequence[str], gone: Sequence[str],
    since: datetime,
) -> int:
    """How many reports tied to the subscriber since `since` said one of `reasons`, or were
    temporary and said one of `gone`: what the repeat rule counts."""
    when = func.coalesce(Bounce.reported_at, Bounce.imported_at)
    return int(connection.scalar(
        select(func.count()).select_from(Bounce).where(
            Bounce.subscriber_id == subscriber_id, when >= since,
            or_(Bounce.reason.in_(list(reasons)),
                and_(Bounce.severity == "temporary", Bounce.reason.in_(list(gone)))),
        )
    ) or 0)


_INSERTS: dict[str, Any] = {}  # by dialect: the INSERT ... ON CONFLICT (key) DO NOTHING


def _insert(connection: Connection) -> Any:
    dialect = connection.dialect.name
    if dialect not in _INSERTS:
        _INSERTS[dialect] = (
            dialect_insert(connection)(Bounce)
            .values(
                key=bindparam("b_key"),
                delivery_id=bindparam("b_delivery"),
                subscriber_id=bindparam("b_subscriber"),
                severity=bindparam("b_severity"),
                status=bindparam("b_status"),
                diagnostic=bindparam("b_diagnostic"),
                format=bindparam("b_format"),
                reported_at=bindparam("b_reported"),
                imported_at=bindparam("b_now"),
                reason=bindparam("b_reason"),
                trust=bindparam("b_trust"),
            )
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(Bounce.id)
        )
    return _INSERTS[dialect]


@dataclass(frozen=True)
class Recorded:
    new: bool  # False: this report was already imported; nothing was changed
    delivery_failed: bool = False
    subscriber_changed: bool = False  # moved from active to the status asked for


def record(
    connection: Connection,
    *,
    key: str,
    target: Target | None,
    severity: str,
    status: str | None,
    code: int | None,
    diagnostic: str,
    format: str,
    reason: str,
    trust: str | None,
    reported_at: datetime | None,
    now: datetime,
    fail_delivery: bool = False,
    subscriber_status: SubscriberStatus | None = None,
) -> Recorded:
    """Store one report; fail the delivery, change the subscriber's status, as asked.

    What a report may change is the caller's decision (`mailer.bounces.trust`); a report
    already imported changes nothing. The delivery's state changes by compare-and-set, from
    the states a bounce may leave: a delivery being sent right now is left to its sender. A
    subscriber only ever leaves `active` (see `subscribers.set_status`).
    """
    inserted = connection.execute(
        _insert(connection),
        {
            "b_key": key,
            "b_delivery": target.delivery_id if target else None,
            "b_subscriber": target.subscriber_id if target else None,
            "b_severity": severity,
            "b_status": status,
            "b_diagnostic": diagnostic,
            "b_format": format[:32],
            "b_reported": reported_at,
            "b_now": now,
            "b_reason": reason[:32],
            "b_trust": trust,
        },
    ).first()
    if inserted is None:
        return Recorded(new=False)
    if target is None:
        return Recorded(new=True)
    failed = False
    if fail_delivery and target.delivery_id is not None:
        failed = bool(
            connection.execute(
                _FAIL,
                {"b_id": target.delivery_id, "b_code": code,
                 "b_reply": f"bounce: {diagnostic}"[:2000], "b_now": now},
            ).rowcount
        )
    changed = subscriber_status is not None and (
        set_status(connection, target.email_key, subscriber_status, now) is not None
    )
    return Recorded(new=True, delivery_failed=failed, subscriber_changed=changed)
