"""Every SQL statement of `mailer purge`: what is finished, and removing it.

A purged campaign keeps its counts by state in its own row (`purged_counts`) and loses its
deliveries, their attempts log and their bounce reports. Erasing everyone keeps, of the
people who unsubscribed or bounced, only a keyed hash of the address, so that a later import
of an old file cannot bring them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, or_, select, update

from mailer.core.states import DeliveryState, SubscriberStatus
from mailer.core.tokens import keyed_hash
from mailer.store.models import Attempt, Bounce, Campaign, Delivery, Purge, Subscriber
from mailer.store.subscribers import suppress

S = DeliveryState
UNFINISHED = (S.PENDING, S.SENDING, S.DEFERRED, S.UNCERTAIN)
ERASE_BATCH = 1000


@dataclass(frozen=True)
class CampaignInfo:
    id: int
    name: str
    purged_at: datetime | None
    deliveries: int
    unfinished: dict[str, int]  # state -> count, for the states still to send
    last_activity: datetime | None


def campaigns(connection: Connection, name: str | None = None) -> list[CampaignInfo]:
    """Every campaign (or the one named), with what a purge needs to know about it."""
    query = select(Campaign.id, Campaign.name, Campaign.purged_at, Campaign.updated_at)
    if name is not None:
        query = query.where(Campaign.name == name)
    found = []
    for row in connection.execute(query.order_by(Campaign.id)).all():
        counts: dict[str, int] = {}
        last = row.updated_at
        for state, number, latest in connection.execute(
            select(Delivery.state, func.count(), func.max(Delivery.updated_at))
            .where(Delivery.campaign_id == row.id)
            .group_by(Delivery.state)
        ).all():
            counts[state] = number
            last = max(last, latest) if last and latest else (last or latest)
        unfinished = {s.value: counts[s.value] for s in UNFINISHED if counts.get(s.value)}
        found.append(CampaignInfo(row.id, row.name, row.purged_at, sum(counts.values()),
                                  unfinished, last))
    return found


@dataclass
class Removed:
    campaigns: int = 0
    deliveries: int = 0
    attempts: int = 0
    bounces: int = 0
    subscribers: int = 0
    suppressions: int = 0

    def add(self, other: Removed) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def purge_campaign(connection: Connection, campaign_id: int, now: datetime) -> Removed:
    """Keep the campaign's counts by state; remove its deliveries, attempts and bounces."""
    counts = {state.value: 0 for state in DeliveryState}
    for state, number in connection.execute(
        select(Delivery.state, func.count())
        .where(Delivery.campaign_id == campaign_id)
        .group_by(Delivery.state)
    ).all():
        counts[state] = number
    ids = select(Delivery.id).where(Delivery.campaign_id == campaign_id)
    removed = Removed(campaigns=1)
    removed.bounces = connection.execute(
        delete(Bounce).where(Bounce.delivery_id.in_(ids))
    ).rowcount
    removed.attempts = connection.execute(
        delete(Attempt).where(Attempt.delivery_id.in_(ids))
    ).rowcount
    removed.deliveries = connection.execute(
        delete(Delivery).where(Delivery.campaign_id == campaign_id)
    ).rowcount
    connection.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id)
        .values(purged_at=now, purged_counts=counts, updated_at=now)
    )
    return removed


def purge_loose_bounces(connection: Connection, before: datetime | None) -> int:
    """Bounce reports tied to no delivery (unmatched, or matched by address only), imported
    before `before` (None: all of them)."""
    query = delete(Bounce).where(Bounce.delivery_id.is_(None))
    if before is not None:
        query = query.where(Bounce.imported_at < before)
    return connection.execute(query).rowcount


def erase_subscribers(connection: Connection, suppression_key: bytes, now: datetime) -> Removed:
    """Erase every subscriber, keeping a keyed hash of those who unsubscribed or bounced.

    Run after every campaign was purged; whatever still names a subscriber goes with them.
    """
    removed = Removed()
    opted_out = [SubscriberStatus.UNSUBSCRIBED.value, SubscriberStatus.BOUNCED.value]
    last_id = 0
    while True:
        rows = connection.execute(
            select(Subscriber.id, Subscriber.email_key, Subscriber.status)
            .where(Subscriber.id > last_id)
            .order_by(Subscriber.id)
            .limit(ERASE_BATCH)
        ).all()
        if not rows:
            break
        last_id = rows[-1].id
        for row in rows:
            if row.status in opted_out:
                suppress(connection, keyed_hash(suppression_key, row.email_key), row.status, now)
                removed.suppressions += 1
        ids = [row.id for row in rows]
        deliveries = select(Delivery.id).where(Delivery.subscriber_id.in_(ids))
        removed.bounces += connection.execute(
            delete(Bounce).where(
                or_(Bounce.subscriber_id.in_(ids), Bounce.delivery_id.in_(deliveries))
            )
        ).rowcount
        removed.attempts += connection.execute(
            delete(Attempt).where(Attempt.delivery_id.in_(deliveries))
        ).rowcount
        removed.deliveries += connection.execute(
            delete(Delivery).where(Delivery.subscriber_id.in_(ids))
        ).rowcount
        removed.subscribers += connection.execute(
            delete(Subscriber).where(Subscriber.id.in_(ids))
        ).rowcount
    removed.bounces += connection.execute(delete(Bounce)).rowcount
    return removed


def log(connection: Connection, scope: str, removed: Removed, now: datetime) -> None:
    connection.execute(
        insert(Purge).values(
            at=now,
            scope=scope[:255],
            campaigns=removed.campaigns,
            deliveries=removed.deliveries,
            attempts=removed.attempts,
            bounces=removed.bounces,
            subscribers=removed.subscribers,
            suppressions=removed.suppressions,
        )
    )
