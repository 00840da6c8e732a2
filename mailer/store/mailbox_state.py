"""Where bounce imports got to: the messages already recorded, the IMAP folders' last UID.

A second import of the same mailbox asks `known_messages` about a batch of digests before
parsing anything, and parses only the rest; `remember_messages` adds a batch's digests after
its reports are recorded. An IMAP import asks `last_uid` once, fetches only the UIDs above it,
and `advance`s it after each recorded batch. Both are shortcuts over what stays the rule (each
report is stored once under its key): losing them re-reads, never records twice.

Lookups take their values as one JSON parameter (`bulk.values_of`), by chunks of CHUNK: no
statement comes near a database's limit of bound parameters (SQLite 32,766, PostgreSQL 65,535).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, and_, case, delete, select

from mailer.store.bulk import insert_rows, values_of
from mailer.store.engine import dialect_insert
from mailer.store.models import MailboxFolder, MailboxMessage

CHUNK = 1_000  # digests per lookup
_MESSAGES: Table = MailboxMessage.__table__  # type: ignore[assignment]


def known_messages(connection: Connection, digests: Sequence[str], reader: str) -> dict[str, int]:
    """Those of `digests` an earlier import by `reader` recorded, with how many reports each
    gave (a message another version read is not known: this one may read it otherwise)."""
    found: dict[str, int] = {}
    for start in range(0, len(digests), CHUNK):
        chunk = digests[start : start + CHUNK]
        rows = connection.execute(
            select(MailboxMessage.digest, MailboxMessage.reports).where(
                MailboxMessage.digest.in_(values_of(connection, chunk, "b_digests")),
                MailboxMessage.reader == reader,
            )
        )
        found.update((digest, reports) for digest, reports in rows)
    return found


def remember_messages(
    connection: Connection, reports: Mapping[str, int], reader: str, now: datetime
) -> None:
    """Note these messages (digest → reports recorded) as imported by `reader`; what another
    version noted of them is replaced, what this one did stays."""
    rows: list[dict[str, Any]] = [
        {"digest": digest, "reports": count} for digest, count in reports.items()
    ]
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        connection.execute(
            delete(MailboxMessage).where(
                MailboxMessage.digest.in_(
                    values_of(connection, [row["digest"] for row in chunk], "b_digests")
                ),
                MailboxMessage.reader != reader,
            )
        )
        insert_rows(
            connection,
            _MESSAGES,
            chunk,
            constants={"reader": reader, "imported_at": now},
            skip_conflicts_on="digest",
        )


def _folder(host: str, account: str, folder: str) -> Any:
    return and_(
        MailboxFolder.host == host,
        MailboxFolder.account == account,
        MailboxFolder.folder == folder,
    )


def last_uid(connection: Connection, host: str, account: str, folder: str, uidvalidity: int) -> int:
    """The highest UID recorded from this folder under this UIDVALIDITY; 0 if none."""
    row = connection.execute(
        select(MailboxFolder.uidvalidity, MailboxFolder.last_uid).where(
            _folder(host, account, folder)
        )
    ).first()
    return int(row.last_uid) if row is not None and row.uidvalidity == uidvalidity else 0


def advance(
    connection: Connection,
    host: str,
    account: str,
    folder: str,
    uidvalidity: int,
    uid: int,
    now: datetime,
) -> None:
    """Note that this folder is recorded up to `uid`: never backwards under the same
    UIDVALIDITY (two imports may overlap); a new UIDVALIDITY starts it afresh."""
    insert = dialect_insert(connection)(MailboxFolder).values(
        host=host, account=account, folder=folder, uidvalidity=uidvalidity, last_uid=uid,
        updated_at=now,
    )
    new = insert.excluded
    further = and_(
        MailboxFolder.uidvalidity == new.uidvalidity, MailboxFolder.last_uid > new.last_uid
    )
    connection.execute(
        insert.on_conflict_do_update(
            index_elements=["host", "account", "folder"],
            set_={
                "uidvalidity": new.uidvalidity,
                "last_uid": case((further, MailboxFolder.last_uid), else_=new.last_uid),
                "updated_at": new.updated_at,
            },
        )
    )
