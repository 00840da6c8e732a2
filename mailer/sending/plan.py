"""`mailer status` with the relays' side: per relay, its declared windows and how full they
are, any pause and its end; per campaign, what is left and, at the declared budgets, about
when it will be done ("18000 left; at 2000/day: about 9 days, until 11 December").
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from mailer.core.config import Settings, relay_specs
from mailer.core.errors import NotFoundError
from mailer.store import counts, pauses, slots
from mailer.store import subscribers as store

LEFT = ("pending", "deferred", "uncertain", "sending")


def _iso(moment: datetime | None) -> str | None:
    """To the second, rounded up: a pause or a full window has not ended before it says."""
    if moment is None:
        return None
    if moment.microsecond:
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    return moment.isoformat(timespec="seconds")


def relays(connection: Connection, settings: Settings, now: datetime) -> list[dict[str, Any]]:
    """The contract's `relays` list: name, paused_until, windows (limit, seconds, used,
    next_slot_at); and, extra, the relay's last refusal."""
    known = pauses.states(connection)
    listed = []
    for spec in relay_specs(settings):
        state = known.get(spec.name)
        paused = state.until if state and state.until > now else None
        listed.append({
            "name": spec.name,
            "paused_until": _iso(paused),
            "refusal": state.reason if paused and state else None,
            "windows": [
                {**use.window.as_json(), "used": use.used,
                 "next_slot_at": _iso(use.next_slot_at)}
                for use in slots.usage(connection, spec.name, spec.quota, now)
            ],
        })
    return listed


def per_day(settings: Settings) -> float | None:
    """Messages a day at the declared budgets, all relays together; None if any is unbounded."""
    total = 0.0
    for spec in relay_specs(settings):
        if not spec.quota:
            return None
        total += min(w.limit * 86400.0 / w.seconds for w in spec.quota)
    return total or None


def estimate(left: int, settings: Settings, now: datetime) -> dict[str, Any] | None:
    """When `left` deliveries will be sent at the declared budgets (none declared: None)."""
    rate = per_day(settings)
    if not left or rate is None:
        return None
    days = left / rate
    return {"left": left, "per_day": round(rate), "days": round(days, 2),
            "finish_at": _iso(now + timedelta(days=days))}


def status(connection: Connection, settings: Settings, campaign: str | None,
           now: datetime) -> dict[str, Any]:
    """The contract's `mailer status --json` shape, plus `relays` and each campaign's `plan`."""
    listed = relays(connection, settings, now)
    if campaign is not None:
        found = counts.campaign_status(connection, campaign)
        if found is None:
            raise NotFoundError(
                f"unknown campaign {campaign!r}",
                hint="a campaign exists once `mailer send CAMPAIGN` has queued it",
            )
        return _planned(found, settings, now, listed)
    campaigns = [counts.campaign_status(connection, name)
                 for name in counts.campaign_names(connection)]
    data = {
        "subscribers": store.count_by_status(connection),
        "campaigns": [_planned(c, settings, now, listed) for c in campaigns if c is not None],
    }
    if listed:
        data["relays"] = listed
    return data


def _planned(found: dict[str, Any], settings: Settings, now: datetime,
             listed: list[dict[str, Any]]) -> dict[str, Any]:
    """The campaign's status, with `relays` when a relay is configured and `plan` when its
    budget is declared (the contract's shape is unchanged without them)."""
    left = sum(found["counts"].get(state, 0) for state in LEFT)
    planned = estimate(left, settings, now)
    return {**found, **({"relays": listed} if listed else {}),
            **({"plan": planned} if planned else {})}
