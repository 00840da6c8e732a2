"""Claiming deliveries to send: claim with a lease, renew, release, lease expiry, what is due.

Every change of a delivery's state is a compare-and-set: the UPDATE names the state it expects
(and, for a claimed delivery, the lease owner), so a slow worker can never overwrite a row that
another one has taken over since. Time always comes from the caller's clock.

Claiming takes a batch in one write transaction: on SQLite the transaction starts with BEGIN
IMMEDIATE, so two processes claim one after the other; on PostgreSQL the candidate rows are
selected `FOR UPDATE SKIP LOCKED`, so workers on several machines each take different rows
without waiting for one another.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Select, and_, func, insert, or_, select, update

from mailer.core.people import Recipient
from mailer.core.states import DeliveryState, SubscriberStatus
from mailer.store.models import Attempt, Campaign, Delivery, Subscriber

S = DeliveryState
ACTIVE = SubscriberStatus.ACTIVE.value


# --- claim ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker now holds (state `sending`), with what is needed to send it."""

    delivery_id: int
    origin: DeliveryState  # where it was claimed from: where a release puts it back
    message_id: str
    attempts: int
    first_attempt_at: datetime | None
    recipient: Recipient


@dataclass(frozen=True)
class ClaimResult:
    claimed: list[Claimed]
    skipped: int  # subscribers no longer active: their deliveries were skipped


def _due(campaign_id: int, now: datetime, include_uncertain: bool) -> list[Any]:
    """The claimable states, each a WHERE clause the (campaign, state, next_attempt_at)
    index serves: due retries first, then the uncertain ones, then the never tried."""
    clauses: list[Any] = [
        and_(Delivery.state == S.DEFERRED.value, Delivery.next_attempt_at <= now),
    ]
    if include_uncertain:
        clauses.append(Delivery.state == S.UNCERTAIN.value)
    clauses.append(Delivery.state == S.PENDING.value)
    return [and_(Delivery.campaign_id == campaign_id, clause) for clause in clauses]


def _candidates(connection: Connection, where: Any, limit: int) -> list[Any]:
    query: Select[Any] = select(Delivery.id, Delivery.state).where(where).limit(limit)  # type: ignore[assignment]
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(connection.execute(query))


def claim(
    connection: Connection,
    campaign_id: int,
    *,
    owner: str,
    now: datetime,
    lease_seconds: float,
    limit: int,
    include_uncertain: bool = True,
) -> ClaimResult:
    """Take up to `limit` due deliveries: `sending`, leased to `owner` until now + lease.

    Run inside a write transaction; committed before any of them is sent. Deliveries whose
    subscriber is no longer active are skipped instead.
    """
    picked: list[Any] = []
    for where in _due(campaign_id, now, include_uncertain):
        if len(picked) >= limit:
            break
        picked += _candidates(connection, where, limit - len(picked))
    if not picked:
        return ClaimResult([], 0)
    origins = {row.id: DeliveryState(row.state) for row in picked}
    ids = list(origins)
    rows = connection.execute(
        select(
            Delivery.id.label("delivery_id"),
            Delivery.message_id,
            Delivery.attempts,
            Delivery.first_attempt_at,
            Subscriber,
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.id.in_(ids))
        .order_by(Delivery.id)
    ).all()
    gone = [row.delivery_id for row in rows if row.status != ACTIVE]
    skipped = 0
    if gone:
        skipped = connection.execute(
            update(Delivery)
            .where(Delivery.id.in_(gone), Delivery.state.in_(list(_claimable())))
            .values(state=S.SKIPPED.value, lease_owner=None, lease_expires_at=None,
                    updated_at=now)
        ).rowcount
    keep = [row for row in rows if row.status == ACTIVE]
    if keep:
        connection.execute(
            update(Delivery)
            .where(Delivery.id.in_([row.delivery_id for row in keep]),
                   Delivery.state.in_(list(_claimable())))
            .values(
                state=S.SENDING.value,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
        )
    claimed = [
        Claimed(
            row.delivery_id,
            origins[row.delivery_id],
            row.message_id,
            row.attempts,
            row.first_attempt_at,
            Recipient.from_row(row),
        )
        for row in keep
    ]
    return ClaimResult(claimed, skipped)


def _claimable() -> frozenset[str]:
    return frozenset({S.PENDING.value, S.DEFERRED.value, S.UNCERTAIN.value})


def renew_leases(
    connection: Connection, owner: str, now: datetime, lease_seconds: float
) -> set[int]:
    """Extend every lease `owner` still holds; return those deliveries' ids (a delivery
    missing from them was taken over by another worker after its lease expired)."""
    return set(connection.scalars(
        update(Delivery)
        .where(Delivery.lease_owner == owner, Delivery.state == S.SENDING.value)
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
        .returning(Delivery.id)
    ))


def expire_leases(connection: Connection, now: datetime, campaign_id: int | None = None) -> int:
    """Deliveries whose worker died while holding them become `uncertain`.

    The worker may have transmitted them before it died: the relay may have them. One attempt
    is counted and logged for each, under the dead worker's name, by whichever process turns
    it: on PostgreSQL the rows are locked (SKIP LOCKED), and only the rows this UPDATE
    changed are logged, so two processes expiring at once log each delivery once.
    """
    where = [Delivery.state == S.SENDING.value, Delivery.lease_expires_at < now]
    if campaign_id is not None:
        where.append(Delivery.campaign_id == campaign_id)
    query = select(Delivery.id, Delivery.lease_owner).where(*where)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    owners = {row.id: row.lease_owner for row in connection.execute(query)}
    if not owners:
        return 0
    expired = list(connection.scalars(
        update(Delivery)
        .where(Delivery.id.in_(list(owners)), *where)
        .values(
            state=S.UNCERTAIN.value,
            attempts=Delivery.attempts + 1,
            first_attempt_at=func.coalesce(Delivery.first_attempt_at, Delivery.lease_expires_at),
            last_code=None,
            last_reply="the worker holding it stopped while sending (lease expired)",
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
        .returning(Delivery.id)
    ))
    if expired:
        connection.execute(
            insert(Attempt),
            [
                {"delivery_id": delivery_id, "at": now, "worker": owners[delivery_id] or "?",
                 "outcome": S.UNCERTAIN.value, "code": None,
                 "reply": "lease expired: the worker stopped while sending"}
                for delivery_id in expired
            ],
        )
    return len(expired)


# --- release -------------------------------------------------------------------------------


def release(
    connection: Connection, owner: str, held: Iterable[tuple[int, DeliveryState]], now: datetime
) -> int:
    """Give back deliveries claimed but not tried: each returns to the state it came from,
    with no attempt counted."""
    by_origin: dict[DeliveryState, list[int]] = {}
    for delivery_id, origin in held:
        by_origin.setdefault(origin, []).append(delivery_id)
    released = 0
    for origin, ids in by_origin.items():
        for start in range(0, len(ids), 500):
            released += connection.execute(
                update(Delivery)
                .where(
                    Delivery.id.in_(ids[start : start + 500]),
                    Delivery.state == S.SENDING.value,
                    Delivery.lease_owner == owner,
                )
                .values(state=origin.value, lease_owner=None, lease_expires_at=None,
                        updated_at=now)
            ).rowcount
    return released


# --- what is due ---------------------------------------------------------------------------


def count_due(
    connection: Connection, campaign_id: int, now: datetime, include_uncertain: bool
) -> int:
    """How many deliveries of a campaign a run would send now."""
    states = [DeliveryState.PENDING.value]
    if include_uncertain:
        states.append(DeliveryState.UNCERTAIN.value)
    return int(
        connection.scalar(
            select(func.count()).select_from(Delivery).where(
                Delivery.campaign_id == campaign_id, Delivery.state.in_(states)
            )
        ) or 0
    ) + int(
        connection.scalar(
            select(func.count()).select_from(Delivery).where(
                Delivery.campaign_id == campaign_id,
                Delivery.state == DeliveryState.DEFERRED.value,
                Delivery.next_attempt_at <= now,
            )
        ) or 0
    )


def due_campaigns(
    connection: Connection, now: datetime, *, include_uncertain: bool, include_pending: bool = True
) -> list[str]:
    """Names of the campaigns with something to send now (or a lease to expire)."""
    states = [and_(Delivery.state == S.DEFERRED.value, Delivery.next_attempt_at <= now),
              and_(Delivery.state == S.SENDING.value, Delivery.lease_expires_at < now)]
    if include_pending:
        states.append(Delivery.state == S.PENDING.value)
    if include_uncertain:
        states.append(Delivery.state == S.UNCERTAIN.value)
    names = []
    for campaign_id, name in connection.execute(
        select(Campaign.id, Campaign.name).order_by(Campaign.id)
    ):
        due = connection.scalar(
            select(Delivery.id).where(Delivery.campaign_id == campaign_id, or_(*states)).limit(1)
        )
        if due is not None:
            names.append(name)
    return names
