"""What one bounce import may cost: messages taken in bounded batches, the ones an earlier
run recorded skipped before they are parsed, the oversized and the unrecordable set aside.

For each batch (at most BATCH messages and BATCH_BYTES bytes in memory):

1. A message the reader did not read (`MailItem.too_large`) is skipped and listed.
2. The others are known by a digest of their bytes (`digest`: the same for a message read
   from an mbox, a Maildir or IMAP); those this version of mailer already recorded are
   counted `known`, their reports `already_imported`, and are not parsed again.
3. The rest are parsed and handed to `record`, which stores their reports in a transaction of
   its own. If it fails on the data (RECORD_ERRORS: not a locked or unreachable database,
   which stops the run), each message is recorded again alone; the one that still fails is
   skipped and listed, the rest is recorded. If every message fails, the fault is not in one
   message: the first error stops the run.
4. The digests of the messages recorded (unless unrecognised: a later version may
   understand them) and, for an IMAP folder, its last UID in the batch are saved.

Nothing here decides what a report means: that is `record`'s (mailer.bounces.run).
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

import sqlalchemy.exc
from sqlalchemy import Engine

import mailer
from mailer.bounces.dsn import Report, parse
from mailer.bounces.mailboxes import ImapFolder, MailItem
from mailer.core.clock import Clock
from mailer.store import mailbox_state
from mailer.store.engine import read_transaction, write_transaction

BATCH = 100  # messages recorded per transaction
BATCH_BYTES = 16 * 1024 * 1024  # and the bytes of them held at once
LISTED = 100  # skipped messages listed in the summary
# A failure that comes from a message's data, not from the database being away or locked
# (those become mailer.core.errors.DatabaseError and stop the run: nothing is set aside).
RECORD_ERRORS = (
    sqlalchemy.exc.DataError,
    sqlalchemy.exc.IntegrityError,
    sqlalchemy.exc.ProgrammingError,
    ValueError,
    UnicodeError,
    OverflowError,
)
# What recorded a message: mailer's version, so that an upgrade reads every message again.
READER = mailer.__version__

_QUOTED_FROM = re.compile(rb"(?m)^>+(From )")

Parsed = tuple[MailItem, Report]


class Tally(Protocol):
    """The counts of an import this module keeps (mailer.bounces.run.BounceSummary)."""

    messages: int
    known: int
    already_imported: int
    skipped: int
    skipped_messages: list[dict[str, str]]


T = TypeVar("T", bound=Tally)


def digest(raw: bytes) -> str:
    """SHA-256 of a message as every kind of mailbox gives it: LF line ends, no mbox "From "
    line first, ">From " unquoted (mboxo and mboxrd quote differently), no newline at the end."""
    data = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if data.startswith(b"From "):
        end = data.find(b"\n")
        data = b"" if end < 0 else data[end + 1 :]
    if b">From " in data:
        data = _QUOTED_FROM.sub(rb"\1", data)
    return hashlib.sha256(data.rstrip(b"\n")).hexdigest()


def import_items(
    engine: Engine,
    items: Iterable[MailItem],
    summary: T,
    record: Callable[[list[Parsed]], None],
    *,
    folder: ImapFolder | None,
    clock: Clock,
    progress: Callable[[], None] | None = None,
) -> None:
    """Every message of `items`, by batches, through steps 1 to 4 of the module doc;
    `progress` is called after each batch."""
    batch: list[MailItem] = []
    size = 0
    for item in items:
        batch.append(item)
        size += len(item.raw)
        if len(batch) >= BATCH or size >= BATCH_BYTES:
            _import_batch(engine, batch, summary, record, folder, clock)
            batch, size = [], 0
            if progress is not None:
                progress()
    if batch:
        _import_batch(engine, batch, summary, record, folder, clock)
    if progress is not None:
        progress()


def _import_batch(
    engine: Engine,
    batch: list[MailItem],
    summary: T,
    record: Callable[[list[Parsed]], None],
    folder: ImapFolder | None,
    clock: Clock,
) -> None:
    digests = {id(item): digest(item.raw) for item in batch if not item.too_large}
    known: dict[str, int] = {}
    if digests:
        with read_transaction(engine) as connection:
            known = mailbox_state.known_messages(connection, list(set(digests.values())), READER)
    parsed: list[Parsed] = []
    for item in batch:
        if item.too_large:
            _skip(summary, item, f"not read: {item.size / 2**20:.1f} MiB, too large for a bounce")
        elif (reports := known.get(digests[id(item)])) is not None:
            summary.messages += 1
            summary.known += 1
            summary.already_imported += reports
        else:
            parsed.append((item, parse(item.raw)))
    recorded = _record(parsed, summary, record)
    remembered = {
        digests[id(item)]: len(report.recipients)
        for item, report in recorded
        if report.kind != "unrecognised"
    }
    last_uid = max((item.uid for item in batch if item.uid is not None), default=None)
    if not remembered and (folder is None or last_uid is None):
        return
    with write_transaction(engine) as connection:
        now = clock()
        mailbox_state.remember_messages(connection, remembered, READER, now)
        if folder is not None and last_uid is not None:
            mailbox_state.advance(
                connection, folder.host, folder.user, folder.folder, folder.uidvalidity,
                last_uid, now,
            )


def _record(parsed: list[Parsed], summary: T, record: Callable[[list[Parsed]], None]) -> list[
    Parsed
]:
    """Record the batch in one transaction or, if its data fails, each message alone; what
    was recorded (the summary counts it only)."""
    if not parsed:
        return []
    kept = copy.deepcopy(summary)
    try:
        record(parsed)
        return parsed
    except RECORD_ERRORS as exc:
        first: Exception = exc
        _restore(summary, kept)
    recorded: list[Parsed] = []
    failed: list[tuple[MailItem, Exception]] = []
    for message in parsed:
        kept = copy.deepcopy(summary)
        try:
            record([message])
        except RECORD_ERRORS as again:
            _restore(summary, kept)
            failed.append((message[0], again))
        else:
            recorded.append(message)
    if not recorded and len(parsed) > 1:
        raise first
    for item, error in failed:
        _skip(summary, item, f"not recorded: {_first_line(error)}")
    return recorded


def _restore(summary: T, kept: T) -> None:
    """Put back the counts of before a transaction that rolled back."""
    vars(summary).update(vars(kept))


def _skip(summary: Tally, item: MailItem, reason: str) -> None:
    summary.messages += 1
    summary.skipped += 1
    if len(summary.skipped_messages) < LISTED:
        summary.skipped_messages.append({"message": item.key, "reason": reason})


def _first_line(exc: Exception) -> str:
    """`DataError: PostgreSQL text fields cannot contain NUL (0x00) bytes`: no SQL, no values."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"[:200]
