"""Every SQL statement about subscribers: merge an import batch, list, unsubscribe, forget.

An import is merged batch by batch on one connection. A temporary table remembers the
addresses already seen in this file, so duplicates are found across the whole file with
memory that does not grow with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)

from mailer.core.people import Candidate, Notice, Rejection
from mailer.core.states import DeliveryState, SubscriberStatus
from mailer.core.tokens import keyed_hash
from mailer.store.bulk import insert_rows, values_of
from mailer.store.engine import dialect_insert
from mailer.store.models import Attempt, Bounce, Delivery, ImportRun, Subscriber, Suppression

ACTIVE = SubscriberStatus.ACTIVE
_SUBSCRIBERS: Table = Subscriber.__table__  # type: ignore[assignment]
_MERGED_FIELDS = ("first_name", "last_name", "civility")
# The addresses seen so far in the file being imported: a temporary table, private to the
# import's connection, so duplicates are found across batches without holding them in memory.
_SEEN = Table(
    "mailer_import_seen",
    MetaData(),
    Column("email_key", String(320), primary_key=True),
    Column("line", Integer, nullable=False),
    prefixes=["TEMPORARY"],
)


# Why an address is refused, by the reason its keyed hash was kept.
_SUPPRESSED = {
    "forget": "address erased on request (forget); not imported again",
    "unsubscribed": "address unsubscribed before the list was purged; not imported again",
    "bounced": "address bounced before the list was purged; not imported again",
}


@dataclass
class BatchResult:
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    notices: list[Notice] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def start_import(connection: Connection) -> None:
    """Create the per-import table of addresses seen (it lives as long as the connection)."""
    _SEEN.drop(connection, checkfirst=True)
    _SEEN.create(connection)


def finish_import(connection: Connection) -> None:
    _SEEN.drop(connection, checkfirst=True)
    if connection.dialect.name == "postgresql":
        # Fresh statistics for the planner, even where autovacuum is off or has not run yet.
        connection.execute(text("ANALYZE subscribers"))


def _seen_before(connection: Connection, keys: list[str]) -> dict[str, int]:
    rows = connection.execute(
        select(_SEEN.c.email_key, _SEEN.c.line).where(
            _SEEN.c.email_key.in_(values_of(connection, keys))
        )
    )
    return {row[0]: row[1] for row in rows}


def merge_batch(
    connection: Connection,
    candidates: list[Candidate],
    *,
    suppression_key: bytes,
    source: str,
    now: datetime,
) -> BatchResult:
    """Merge one batch of valid rows: insert the new, update the changed, count the rest.

    Re-importing never resubscribes: a non-active subscriber stays as they are, while an
    unsubscribe or bounce in the file is applied to an active one.
    """
    result = BatchResult()
    if not candidates:
        return result
    first: dict[str, Candidate] = {}
    opt_outs: dict[str, SubscriberStatus] = {}
    earlier = _seen_before(connection, list({c.key for c in candidates}))
    for candidate in candidates:
        original_line = earlier.get(candidate.key) or (
            first[candidate.key].line if candidate.key in first else None
        )
        if original_line is None:
            first[candidate.key] = candidate
            continue
        result.duplicates += 1
        message = f"duplicate of line {original_line}; skipped"
        if candidate.status is not ACTIVE:
            opt_outs.setdefault(candidate.key, candidate.status)
            message = f"duplicate of line {original_line}; its status {candidate.status} applied"
        result.notices.append(Notice(candidate.line, message))
    if not first:
        _apply_opt_outs(connection, opt_outs, now)
        return result
    insert_rows(connection, _SEEN, [{"email_key": c.key, "line": c.line} for c in first.values()])

    hashes = {keyed_hash(suppression_key, key): key for key in first}
    for key_hash, reason in connection.execute(
        select(Suppression.key_hash, Suppression.reason).where(
            Suppression.key_hash.in_(values_of(connection, list(hashes)))
        )
    ).all():
        erased = first.pop(hashes[key_hash])
        why = _SUPPRESSED.get(reason, _SUPPRESSED["forget"])
        result.rejections.append(Rejection(erased.line, why))

    existing = {
        row.email_key: row
        for row in connection.execute(
            select(
                Subscriber.id,
                Subscriber.email_key,
                Subscriber.status,
                Subscriber.attributes,
                Subscriber.status_changed_at,
                *(getattr(Subscriber, name) for name in _MERGED_FIELDS),
            ).where(Subscriber.email_key.in_(values_of(connection, list(first))))
        )
    }
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for key, candidate in first.items():
        if candidate.status is not ACTIVE:
            opt_outs.pop(key, None)
        row = existing.get(key)
        if row is None:
            inserts.append(_new_row(candidate))
            continue
        changes = _changes(row._mapping, candidate)
        if changes:
            updates.append(
                {"b_id": row.id, "updated_at": now, **_with_defaults(row._mapping, changes, now)}
            )
        else:
            result.unchanged += 1

    if inserts:
        _insert_new(connection, inserts, source, now)
        result.imported = len(inserts)
    if updates:
        connection.execute(
            update(Subscriber)
            .where(Subscriber.id == bindparam("b_id"))
            .values({name: bindparam(name) for name in updates[0] if name != "b_id"}),
            updates,
        )
        result.updated = len(updates)
    _apply_opt_outs(connection, opt_outs, now)
    return result


def _new_row(candidate: Candidate) -> dict[str, Any]:
    return {
        "email": candidate.email,
        "email_key": candidate.key,
        "address": candidate.address,
        "smtputf8": candidate.smtputf8,
        "first_name": candidate.first_name,
        "last_name": candidate.last_name,
        "civility": candidate.civility,
        "attributes": candidate.attributes,
        "status": candidate.status.value,
    }


def _insert_new(
    connection: Connection, rows: list[dict[str, Any]], source: str, now: datetime
) -> None:
    """Insert the batch's new subscribers; a row another import just added is skipped."""
    for row in rows:  # set when someone arrives already unsubscribed or bounced
        row["status_changed_at"] = None if row["status"] == ACTIVE.value else now
    insert_rows(
        connection,
        _SUBSCRIBERS,
        rows,
        constants={"source": source[:255], "created_at": now, "updated_at": now},
        skip_conflicts_on="email_key",
    )


def _changes(row: Any, candidate: Candidate) -> dict[str, Any]:
    """What the file would change in an existing row (empty cells change nothing)."""
    changes: dict[str, Any] = {}
    for name in _MERGED_FIELDS:
        value = getattr(candidate, name)
        if value is not None and value != row[name]:
            changes[name] = value
    if candidate.attributes:
        merged = {**(row["attributes"] or {}), **candidate.attributes}
        if merged != row["attributes"]:
            changes["attributes"] = merged
    if row["status"] == ACTIVE and candidate.status is not ACTIVE:
        changes["status"] = candidate.status.value
    return changes


def _with_defaults(row: Any, changes: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A full set of updatable values, so one executemany statement fits every row."""
    values = {name: changes.get(name, row[name]) for name in _MERGED_FIELDS}
    values["attributes"] = changes.get("attributes", row["attributes"])
    values["status"] = changes.get("status", row["status"])
    values["status_changed_at"] = now if "status" in changes else row["status_changed_at"]
    return values


def _apply_opt_outs(
    connection: Connection, opt_outs: dict[str, SubscriberStatus], now: datetime
) -> None:
    for key, status in opt_outs.items():
        set_status(connection, key, status, now)


# Built once: a bounce import or the unsubscribe page runs these for one person at a time,
# and building a Core statement costs more than running it on SQLite.
_SET_STATUS = (
    update(Subscriber)
    .where(Subscriber.email_key == bindparam("b_key"), Subscriber.status == ACTIVE.value)
    .values(status=bindparam("b_status"), status_changed_at=bindparam("b_now"),
            updated_at=bindparam("b_now"))
    .returning(Subscriber.id)
)
_SKIP_PENDING = (
    update(Delivery)
    .where(
        Delivery.subscriber_id == bindparam("b_id"),
        Delivery.state.in_([DeliveryState.PENDING.value, DeliveryState.DEFERRED.value]),
    )
    .values(state=DeliveryState.SKIPPED.value, updated_at=bindparam("b_now"), lease_owner=None)
)


def set_status(
    connection: Connection, email_key: str, status: SubscriberStatus, now: datetime
) -> int | None:
    """Move an active subscriber to `status`; skip what they had pending.

    Returns the subscriber's id when the status changed, else None.
    """
    # Only an active subscriber changes: nobody is resubscribed, and a bounce stays a bounce.
    row = connection.execute(
        _SET_STATUS, {"b_key": email_key, "b_status": status.value, "b_now": now}
    ).first()
    if row is None:
        return None
    skip_pending(connection, row.id, now)
    return int(row.id)


def skip_pending(connection: Connection, subscriber_id: int, now: datetime) -> int:
    """Skip the deliveries not yet tried of someone who is no longer active."""
    return connection.execute(_SKIP_PENDING, {"b_id": subscriber_id, "b_now": now}).rowcount


def find(connection: Connection, email_key: str) -> Any:
    """The subscriber row with this address key, or None."""
    return connection.execute(select(Subscriber).where(Subscriber.email_key == email_key)).first()


def get(connection: Connection, subscriber_id: int) -> Any:
    return connection.execute(select(Subscriber).where(Subscriber.id == subscriber_id)).first()


def iterate(connection: Connection, status: SubscriberStatus | None = None) -> Iterator[Any]:
    """Every subscriber (optionally of one status), streamed in id order."""
    query = select(Subscriber).order_by(Subscriber.id)
    if status is not None:
        query = query.where(Subscriber.status == status.value)
    yield from connection.execution_options(yield_per=1000).execute(query)


def first(connection: Connection, status: SubscriberStatus) -> Any:
    """The first subscriber (by id) of a status, or None."""
    query = select(Subscriber).where(Subscriber.status == status.value)
    return connection.execute(query.order_by(Subscriber.id).limit(1)).first()


def count_by_status(connection: Connection) -> dict[str, int]:
    counts = {status.value: 0 for status in SubscriberStatus}
    for status, number in connection.execute(
        select(Subscriber.status, func.count()).group_by(Subscriber.status)
    ):
        counts[status] = number
    return counts


def suppress(connection: Connection, key_hash: str, reason: str, now: datetime) -> None:
    """Remember a keyed hash so the address is never imported again."""
    connection.execute(
        dialect_insert(connection)(Suppression)
        .values(key_hash=key_hash, reason=reason, created_at=now)
        .on_conflict_do_nothing(index_elements=["key_hash"])
    )


def erase(connection: Connection, subscriber_id: int) -> None:
    """Delete every row that names this subscriber: bounce reports, attempts, deliveries,
    the subscriber."""
    deliveries = select(Delivery.id).where(Delivery.subscriber_id == subscriber_id)
    connection.execute(
        delete(Bounce).where(
            or_(Bounce.subscriber_id == subscriber_id, Bounce.delivery_id.in_(deliveries))
        )
    )
    connection.execute(delete(Attempt).where(Attempt.delivery_id.in_(deliveries)))
    connection.execute(delete(Delivery).where(Delivery.subscriber_id == subscriber_id))
    connection.execute(delete(Subscriber).where(Subscriber.id == subscriber_id))


def record_import(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(ImportRun).values(**values))
