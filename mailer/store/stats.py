"""Counts for `mailer status`: subscribers by status, deliveries by state per campaign."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from mailer.models import Campaign, Delivery
from mailer.states import DeliveryState


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def campaign_names(connection: Connection) -> list[str]:
    return list(connection.scalars(select(Campaign.name).order_by(Campaign.id)))


def campaign_status(connection: Connection, name: str) -> dict[str, Any] | None:
    """The contract's shape for one campaign, or None when there is no such campaign."""
    campaign_id = connection.scalar(select(Campaign.id).where(Campaign.name == name))
    if campaign_id is None:
        return None
    counts = {state.value: 0 for state in DeliveryState}
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
