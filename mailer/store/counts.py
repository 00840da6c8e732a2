"""Counts for `mailer status`: subscribers by status, deliveries by state per campaign."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

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
    return {
        "campaign": name,
        "total": sum(counts.values()),
        "counts": counts,
        "next_attempt_at": _iso(next_attempt),
    }
