"""Each relay's pause, and the stretches of time nothing could be sent through it.

A relay that refuses for its budget ("550 5.4.5 Daily user sending quota exceeded") is paused
here, in the ledger every process and host shares: until the pause ends, no `send` and no cron
`retry` knocks on it (providers lengthen a block for clients that keep trying). The cool-down
doubles with each refusal since the relay last accepted a message, up to a day.

The waits (`relay_waits`) are what a delivery's give-up age leaves out: waiting for a budget is
not the recipient's fault. Time always comes from the caller's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from mailer.store.models import RelayState, RelayWait

DAY = 86400.0
_RELAYS = RelayState.__table__


@dataclass(frozen=True)
class Pause:
    relay: str
    until: datetime
    reason: str  # the relay's words
    strikes: int


def ensure_row(connection: Connection, relay: str, now: datetime) -> None:
    """The relay's row exists (it is what reservations lock on PostgreSQL)."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    connection.execute(
        dialect.insert(_RELAYS)
        .values(name=relay, strikes=0, updated_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )


def lock(connection: Connection, relay: str, now: datetime) -> None:
    """Serialise the writers of this relay's budget until the transaction ends. SQLite's
    write transactions (BEGIN IMMEDIATE) already do; PostgreSQL locks the relay's row."""
    ensure_row(connection, relay, now)
    if connection.dialect.name == "postgresql":
        connection.execute(
            select(RelayState.name).where(RelayState.name == relay).with_for_update()
        )


def current(connection: Connection, relay: str, now: datetime) -> Pause | None:
    """The relay's pause, if it lasts beyond `now`."""
    row = connection.execute(
        select(RelayState.paused_until, RelayState.reason, RelayState.strikes)
        .where(RelayState.name == relay)
    ).one_or_none()
    if row is None or row.paused_until is None or row.paused_until <= now:
        return None
    return Pause(relay, row.paused_until, row.reason or "", row.strikes)


def pause(
    connection: Connection,
    relay: str,
    now: datetime,
    *,
    cooldown: float,
    reason: str,
    at_least: datetime | None = None,
) -> Pause:
    """Pause the relay: cool-down × 2^(refusals since its last acceptance − 1), at most a day,
    and at least until `at_least` (the end of a declared window). A relay already paused (by
    another process, for the same refusal) keeps its pause and its count."""
    lock(connection, relay, now)
    found = current(connection, relay, now)
    if found is not None:
        return found
    strikes = int(connection.scalar(
        select(RelayState.strikes).where(RelayState.name == relay)
    ) or 0) + 1
    seconds = min(DAY, cooldown * 2.0 ** min(strikes - 1, 32))
    until = now + timedelta(seconds=seconds)
    if at_least is not None and at_least > until:
        until = at_least
    connection.execute(
        update(RelayState).where(RelayState.name == relay)
        .values(paused_until=until, strikes=strikes, reason=reason[:1000], updated_at=now)
    )
    note_wait(connection, relay, now, until, "paused")
    return Pause(relay, until, reason, strikes)


def accepted(connection: Connection, relay: str, now: datetime) -> None:
    """The relay accepted a message: the next refusal starts the cool-down afresh."""
    connection.execute(
        update(RelayState)
        .where(RelayState.name == relay, RelayState.strikes > 0)
        .values(strikes=0, updated_at=now)
    )


def note_wait(connection: Connection, relay: str, start: datetime, end: datetime,
              reason: str) -> None:
    if end > start:
        connection.execute(insert(RelayWait).values(
            relay=relay, started_at=start, ends_at=end, reason=reason
        ))


def waits(connection: Connection, since: datetime) -> list[tuple[datetime, datetime]]:
    """Every wait (any relay) still running after `since`, as (start, end)."""
    return [
        (row.started_at, row.ends_at)
        for row in connection.execute(
            select(RelayWait.started_at, RelayWait.ends_at)
            .where(RelayWait.ends_at > since).order_by(RelayWait.started_at)
        )
    ]


def forget_waits(connection: Connection, before: datetime) -> int:
    """Drop waits that ended before `before` (older than any give-up age still running)."""
    return connection.execute(delete(RelayWait).where(RelayWait.ends_at < before)).rowcount


def states(connection: Connection) -> dict[str, Pause]:
    """Every relay the ledger knows, with its last pause (ended or not)."""
    return {
        row.name: Pause(row.name, row.paused_until, row.reason or "", row.strikes)
        for row in connection.execute(
            select(RelayState.name, RelayState.paused_until, RelayState.reason,
                   RelayState.strikes).where(RelayState.paused_until.is_not(None))
        )
    }
