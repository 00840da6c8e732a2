"""A relay's declared windows (`MAILER_QUOTA=100/h,2000/day`, and the rate) held in the ledger:
slots reserved in blocks, counted across every run, process and host sharing the database.

A block of N slots is reserved in one write transaction under the relay's lock (mailer.store.
pauses.lock), so two processes can never both take the last slots of a window. Its row says
until when its slots may be used (`until`); a window counts every block whose `until` lies in
it, so a message sent from a block is inside every window that counts that block. What a block
did not use is given back (its count lowered, its `until` brought forward to the last use).
`slack` widens every window a little, for the time between a message's start and the relay's
own timestamp of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, select, update

from mailer.core.budget import Window
from mailer.store.models import RelaySlot
from mailer.store.pauses import lock

SLACK_SECONDS = 2.0  # at most; 2 % of a shorter window (0.2 s of a rate's 10 s window)


@dataclass(frozen=True)
class Reservation:
    slot_id: int | None  # None: nothing granted
    granted: int
    until: datetime  # use the slots before this
    next_slot_at: datetime | None  # granted < wanted: when the fullest window frees a slot


@dataclass(frozen=True)
class WindowUse:
    window: Window
    used: int
    next_slot_at: datetime | None  # None unless the window is full


def _slack(window: Window, slack: float) -> float:
    return min(slack, window.seconds * 0.02)


def _since(window: Window, now: datetime, slack: float) -> datetime:
    return now - timedelta(seconds=window.seconds + _slack(window, slack))


def _use(connection: Connection, relay: str, window: Window, now: datetime,
         slack: float) -> WindowUse:
    since = _since(window, now, slack)
    rows = list(connection.execute(
        select(RelaySlot.until, RelaySlot.count.label("n"))
        .where(RelaySlot.relay == relay, RelaySlot.until > since)
        .order_by(RelaySlot.until)
    ))
    used = sum(int(row.n) for row in rows)
    if used < window.limit:
        return WindowUse(window, used, None)
    # Full: a slot frees when enough of the oldest blocks have left the window.
    must_leave, left = used - window.limit + 1, 0
    for row in rows:
        left += int(row.n)
        if left >= must_leave:
            frees = row.until + timedelta(seconds=window.seconds + _slack(window, slack))
            return WindowUse(window, used, max(frees, now))
    return WindowUse(window, used, now)  # pragma: no cover - the sum above says otherwise


def usage(connection: Connection, relay: str, windows: tuple[Window, ...], now: datetime,
          slack: float = SLACK_SECONDS) -> list[WindowUse]:
    """How full each window is now (for `mailer status`)."""
    return [_use(connection, relay, window, now, slack) for window in windows]


def reserve(
    connection: Connection,
    relay: str,
    windows: tuple[Window, ...],
    now: datetime,
    *,
    want: int,
    hold: float,
    slack: float = SLACK_SECONDS,
) -> Reservation:
    """Reserve up to `want` slots, to be used within `hold` seconds; as many as every window
    allows. Run inside a write transaction."""
    lock(connection, relay, now)
    longest = max(window.seconds for window in windows)
    connection.execute(delete(RelaySlot).where(
        RelaySlot.relay == relay, RelaySlot.until < now - timedelta(seconds=longest + 3600)
    ))
    granted, next_slot_at = want, None
    for window in windows:
        use = _use(connection, relay, window, now, slack)
        free = max(0, window.limit - use.used)
        if free < granted:
            granted = free
        if use.next_slot_at is not None and (next_slot_at is None
                                             or use.next_slot_at > next_slot_at):
            next_slot_at = use.next_slot_at
    until = now + timedelta(seconds=hold)
    if granted <= 0:
        return Reservation(None, 0, until, next_slot_at or now)
    slot_id = connection.execute(
        insert(RelaySlot).values(relay=relay, until=until, count=granted)
        .returning(RelaySlot.id)
    ).scalar_one()
    return Reservation(slot_id, granted, until, next_slot_at)


def give_back(connection: Connection, slot_id: int, unused: int, now: datetime) -> None:
    """The block is done with: forget its `unused` slots; its last use was before `now`."""
    if unused > 0:
        connection.execute(
            update(RelaySlot).where(RelaySlot.id == slot_id)
            .values(count=RelaySlot.count - unused)
        )
    connection.execute(
        update(RelaySlot).where(RelaySlot.id == slot_id, RelaySlot.until > now).values(until=now)
    )
    connection.execute(delete(RelaySlot).where(RelaySlot.id == slot_id, RelaySlot.count <= 0))
