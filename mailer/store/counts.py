"""Counts for `mailer status`: subscribers by status, deliveries by state per campaign."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from mailer.core.leases import describe_owner
from mailer.core.states import DeliveryState
from mailer.store.models import Campaign, Delivery


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def campaign_names(connection: Connection) -> list[str]:
    return list(connection.scalars(select(Campaign.name).order_by(Campaign.id)))


def campaign_status(connection: Connection, name: str) -> dict[str, Any] | None:
    """The contract's shape for one campaign, or None when there is no such campaign."""
    found = connection.execute(
        select(Campaign.id, Campaign.purged_at, Campaign.purged_counts).where(
            Campaign.name == name
        )
    ).first()
    if found is None:
        return None
    campaign_id = found.id
    counts = {state.value: 0 for state in DeliveryState}
    if found.purged_at is not None:  # `mailer purge` kept the counts, not the deliveries
        counts.update(found.purged_counts or {})
        return {
            "campaign": name,
            "total": sum(counts.values()),
            "counts": counts,
            "next_attempt_at": None,
            "purged_at": _iso(found.purged_at),
        }
    for state, number in connection.execute(
        select(Delivery.state, func.count())
        .where(Delivery.campaign_id == campaign_id)
        .group_by(Delivery.state)
    ):
        counts[state] = number
    next_attempt = connection.scalar(
        select(func.min(Delivery.next_attempt_at)).where(
            Delivery.campaign_id == campaign_id, Delivery.state == DeliveryState.DEFERRED.value
        )
    )
    found_status: dict[str, Any] = {
        "campaign": name,
        "total": sum(counts.values()),
        "counts": counts,
        "next_attempt_at": _iso(next_attempt),
    }
    if counts[DeliveryState.SENDING.value]:
        found_status["held"] = held(connection, campaign_id)
    return found_status


def held(connection: Connection, campaign_id: int) -> dict[str, Any]:
    """The deliveries in `sending`, by the process holding them and until when (an extra key
    of the status: a run stopped by kill -9 leaves them held until their lease expires, and
    nothing sends them before): {"count", "until", "owners": [{"owner", "host", "pid",
    "stopped", "count", "until"}]}; `stopped` is known on the owner's own host only."""
    owners = []
    for owner, number, until in connection.execute(
        select(Delivery.lease_owner, func.count(), func.max(Delivery.lease_expires_at))
        .where(Delivery.campaign_id == campaign_id,
               Delivery.state == DeliveryState.SENDING.value)
        .group_by(Delivery.lease_owner)
        .order_by(func.max(Delivery.lease_expires_at))
    ):
        owners.append({"owner": owner, **describe_owner(owner), "count": number,
                       "until": _iso(until)})
    ends = [o["until"] for o in owners if o["until"]]
    return {"count": sum(o["count"] for o in owners), "until": max(ends) if ends else None,
            "owners": owners}
