"""A campaign's row and its queue: find or create, accept changes, lock, enqueue, pre-flight.

The campaign row holds the templates' fingerprint and the Message-ID nonce; enqueue adds one
pending delivery per active subscriber, its Message-ID fixed there for good; a pre-flight
reads the subscribers still to check. Time always comes from the caller's clock.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, exists, func, literal, select, text, update

from mailer.core.states import DeliveryState, SubscriberStatus
from mailer.store.engine import LOCK_TIMEOUT_MS, dialect_insert
from mailer.store.messageids import message_id_column
from mailer.store.models import Campaign, Delivery, Subscriber

S = DeliveryState
ACTIVE = SubscriberStatus.ACTIVE.value


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
    (`<nonce.subscriber-id.MAC@sender-domain>`, see `messageids`) and never changes, so any
    duplicate a relay receives carries the same Message-ID as the original.
    """
    message_id = message_id_column(connection, campaign.nonce, Subscriber.id, domain)
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
