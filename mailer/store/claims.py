"""Every SQL statement of sending: the campaign row, enqueue, claim with a lease, record, release.

Every change of a delivery's state is a compare-and-set: the UPDATE names the state it expects
(and, for a claimed delivery, the lease owner), so a slow worker can never overwrite a row that
another one has taken over since. Time always comes from the caller's clock.

Claiming takes a batch in one write transaction: on SQLite the transaction starts with BEGIN
IMMEDIATE, so two processes claim one after the other; on PostgreSQL the candidate rows are
selected `FOR UPDATE SKIP LOCKED`, so workers on several machines each take different rows
without waiting for one another.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Select,
    String,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)

from mailer.core.people import Recipient
from mailer.core.states import DeliveryState, SubscriberStatus
from mailer.store.engine import LOCK_TIMEOUT_MS, dialect_insert
from mailer.store.models import Attempt, Campaign, Delivery, Subscriber, UTCDateTime

S = DeliveryState
ACTIVE = SubscriberStatus.ACTIVE.value
_DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]
_ATTEMPTS: Table = Attempt.__table__  # type: ignore[assignment]


# --- the campaign --------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignRow:
    id: int
    name: str
    fingerprint: str | None  # of what its messages are made of (templates, sender, links)
    nonce: str  # the random Message-ID prefix of this campaign
    created_at: datetime
    purged_at: datetime | None = None  # `mailer purge`: only its counts remain


def _campaign(row: Any) -> CampaignRow:
    snapshot = row.snapshot or {}
    return CampaignRow(row.id, row.name, row.template_hash, str(snapshot.get("nonce", "")),
                       row.created_at, row.purged_at)


def find_campaign(connection: Connection, name: str) -> CampaignRow | None:
    row = connection.execute(select(Campaign).where(Campaign.name == name)).first()
    return _campaign(row) if row is not None else None


def create_campaign(
    connection: Connection,
    name: str,
    *,
    fingerprint: str,
    nonce: str,
    sender: str,
    snapshot: dict[str, Any],
    now: datetime,
) -> CampaignRow:
    """The campaign row, created on first use (two processes at once: one row)."""
    connection.execute(
        dialect_insert(connection)(Campaign)
        .values(
            name=name,
            template_hash=fingerprint,
            snapshot={**snapshot, "nonce": nonce},
            sender=sender,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["name"])
    )
    found = find_campaign(connection, name)
    assert found is not None
    return found


def accept_changes(
    connection: Connection, campaign_id: int, fingerprint: str, snapshot: dict[str, Any],
    now: datetime,
) -> None:
    """Record new templates: the deliveries not yet sent will use them."""
    row = connection.execute(select(Campaign.snapshot).where(Campaign.id == campaign_id)).one()
    connection.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id)
        .values(template_hash=fingerprint, snapshot={**snapshot, "nonce": row.snapshot["nonce"]},
                updated_at=now)
    )


@contextlib.contextmanager
def campaign_lock(engine: Engine, name: str) -> Iterator[None]:
    """On PostgreSQL, a session advisory lock per campaign name; nothing on SQLite, where
    one machine's processes share the work with --workers."""
    if engine.dialect.name != "postgresql":
        yield
        return
    digest = hashlib.sha256(f"mailer send {name}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    with engine.connect() as connection:
        # Another process may hold it for a whole pre-flight (minutes for a long list):
        # wait for it however long, unlike row locks.
        connection.execute(text("SET lock_timeout = 0"))
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.execute(text(f"SET lock_timeout = {LOCK_TIMEOUT_MS}"))
            connection.commit()


# --- enqueue -------------------------------------------------------------------------------


def enqueue(connection: Connection, campaign: CampaignRow, domain: str, now: datetime) -> int:
    """One pending delivery per active subscriber not yet queued; returns how many were added.

    One INSERT ... SELECT: no subscriber passes through Python. The Message-ID is fixed here
    (`<nonce.subscriber-id@sender-domain>`) and never changes, so any duplicate a relay
    receives carries the same Message-ID as the original.
    """
    message_id = (
        literal(f"<{campaign.nonce}.") + cast(Subscriber.id, String) + literal(f"@{domain}>")
    )
    queued = exists().where(
        Delivery.campaign_id == campaign.id, Delivery.subscriber_id == Subscriber.id
    )
    source = select(
        literal(campaign.id),
        Subscriber.id,
        literal(S.PENDING.value),
        literal(0),
        message_id,
        literal(now, Delivery.created_at.type),
        literal(now, Delivery.updated_at.type),
    ).where(Subscriber.status == ACTIVE, ~queued)
    statement = (
        dialect_insert(connection)(Delivery)
        .from_select(
            ["campaign_id", "subscriber_id", "state", "attempts", "message_id", "created_at",
             "updated_at"],
            source,
        )
        .on_conflict_do_nothing(index_elements=["campaign_id", "subscriber_id"])
        .returning(Delivery.id)  # counted: psycopg reports rowcount -1 for this statement
    )
    count = sum(1 for _ in connection.execute(statement))
    if count and connection.dialect.name == "postgresql":
        # Fresh statistics for the planner, even where autovacuum is off or has not run yet:
        # without them a bounce import's per-subscriber lookups read the whole campaign's
        # index entries (benchmarks/README.md, "Bounces and purge").
        connection.execute(text("ANALYZE deliveries"))
    return count


def _to_check(campaign_id: int | None, unqueued_only: bool) -> list[Any]:
    where: list[Any] = [Subscriber.status == ACTIVE]
    if campaign_id is None:
        return where
    if unqueued_only:
        skip = [Delivery.campaign_id == campaign_id, Delivery.subscriber_id == Subscriber.id]
    else:
        skip = [
            Delivery.campaign_id == campaign_id,
            Delivery.subscriber_id == Subscriber.id,
            Delivery.state.in_([S.SENT.value, S.FAILED.value, S.SKIPPED.value]),
        ]
    return [*where, ~exists().where(*skip)]


def count_to_check(connection: Connection, campaign_id: int | None, *, unqueued_only: bool) -> int:
    query = select(func.count()).select_from(Subscriber)
    return int(connection.scalar(query.where(*_to_check(campaign_id, unqueued_only))) or 0)


def recipients_to_check(
    connection: Connection,
    campaign_id: int | None,
    *,
    unqueued_only: bool,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[Any]:
    """The subscribers a pre-flight checks, streamed: those not yet queued (each queued
    delivery was checked when it was queued), or, after the templates changed, every one
    still to send. `shard` (i, n) keeps the i-th of n shares, for n processes at once."""
    query = select(Subscriber).where(*_to_check(campaign_id, unqueued_only))
    index, count = shard
    if count > 1:
        query = query.where(Subscriber.id % count == index)
    yield from connection.execution_options(yield_per=1000).execute(query.order_by(Subscriber.id))


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


# --- record and release --------------------------------------------------------------------


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


_RECORD = (
    update(_DELIVERIES)
    .where(
        _DELIVERIES.c.id == bindparam("b_id"),
        _DELIVERIES.c.state == S.SENDING.value,
        _DELIVERIES.c.lease_owner == bindparam("b_owner"),
    )
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


# The attempt, for a delivery that still exists: one erased (`subscribers forget`) while it
# was being sent has nothing left to log against.
_LOG = insert(_ATTEMPTS).from_select(
    ["delivery_id", "at", "worker", "outcome", "code", "reply"],
    select(
        _DELIVERIES.c.id,
        bindparam("a_at", type_=UTCDateTime()),
        bindparam("a_worker", type_=String()),
        bindparam("a_outcome", type_=String()),
        bindparam("a_code", type_=Integer()),
        bindparam("a_reply", type_=Text()),
    ).where(_DELIVERIES.c.id == bindparam("a_id")),
)


def record(connection: Connection, owner: str, results: Sequence[Result]) -> None:
    """Store a batch of outcomes and append them to the attempts log; one transaction."""
    if not results:
        return
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
    connection.execute(_LOG, [
        {"a_id": r.delivery_id, "a_at": r.at, "a_worker": owner, "a_outcome": r.state.value,
         "a_code": r.code, "a_reply": r.reply}
        for r in results
    ])
    bounced = sorted({r.subscriber_id for r in results if r.subscriber_id is not None})
    if bounced:
        now = max(r.at for r in results)
        connection.execute(
            update(Subscriber)
            .where(Subscriber.id.in_(bounced), Subscriber.status == ACTIVE)
            .values(status=SubscriberStatus.BOUNCED.value, status_changed_at=now, updated_at=now)
        )


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
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.campaign_id == campaign_id,
               Delivery.state.in_([state.value for state in states]))
        .order_by(Subscriber.id)
    )
    yield from connection.execution_options(yield_per=1000).execute(query)
