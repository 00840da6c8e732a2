"""`mailer bounces import`: a mailbox of bounces in, the delivery ledger brought up to date.

Each message is parsed (`dsn.parse`), each recipient report in it is matched to the delivery
it is about (`store.bounces`) and recorded in a batch transaction. A permanent report fails the
delivery and, when its status says the mailbox is gone, bounces the subscriber; a temporary
one (a delay notice) is stored and changes nothing; auto-replies, read receipts and success
notices are ignored; what cannot be understood is counted and listed, never fatal. Every
report is stored under a key, so importing the same mailbox twice changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from mailer.bounces.dsn import RecipientReport, Report, parse
from mailer.bounces.mailboxes import MailItem
from mailer.core.addresses import clean_address
from mailer.core.clock import Clock, system_clock
from mailer.core.errors import AddressError
from mailer.core.statuscodes import bounce_marks_subscriber
from mailer.core.tokens import token_subscriber_id, verify_token
from mailer.store import bounces as store
from mailer.store.engine import write_transaction
from mailer.store.meta import token_secret

BATCH = 100  # messages recorded per transaction
LISTED = 100  # unrecognised messages and unmatched reports listed in the summary

Progress = Callable[[int, int | None], None]


@dataclass
class BounceSummary:
    """What one import found. Reports are counted one per recipient: `bounces` is
    permanent + temporary, and also matched + unmatched."""

    source: str
    messages: int = 0
    bounces: int = 0
    permanent: int = 0
    temporary: int = 0
    matched: int = 0
    unmatched: int = 0
    ignored: int = 0
    unrecognised: int = 0
    subscribers_bounced: int = 0
    deliveries_failed: int = 0
    already_imported: int = 0
    ignored_reasons: dict[str, int] = field(default_factory=dict)
    problems: list[dict[str, str]] = field(default_factory=list)
    unmatched_reports: list[dict[str, str | None]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "messages": self.messages,
            "bounces": self.bounces,
            "permanent": self.permanent,
            "temporary": self.temporary,
            "matched": self.matched,
            "unmatched": self.unmatched,
            "ignored": self.ignored,
            "subscribers_bounced": self.subscribers_bounced,
            "deliveries_failed": self.deliveries_failed,
            "already_imported": self.already_imported,
            "unrecognised": self.unrecognised,
            "ignored_reasons": self.ignored_reasons,
            "unrecognised_messages": self.problems,
            "unmatched_reports": self.unmatched_reports,
        }


def import_bounces(
    engine: Engine,
    items: Iterable[MailItem],
    *,
    source: str,
    secret: str | None = None,
    total: int | None = None,
    progress: Progress | None = None,
    clock: Clock = system_clock,
) -> BounceSummary:
    """Parse and record every message of `items`, BATCH messages per transaction."""
    summary = BounceSummary(source)
    batch: list[tuple[MailItem, Report]] = []
    for item in items:
        batch.append((item, parse(item.raw)))
        if len(batch) >= BATCH:
            _record_batch(engine, batch, summary, secret, clock)
            batch = []
            if progress is not None:
                progress(summary.messages, total)
    _record_batch(engine, batch, summary, secret, clock)
    if progress is not None:
        progress(summary.messages, total)
    return summary


def _record_batch(
    engine: Engine,
    batch: list[tuple[MailItem, Report]],
    summary: BounceSummary,
    secret: str | None,
    clock: Clock,
) -> None:
    if not batch:
        return
    with write_transaction(engine) as connection:
        key = token_secret(connection, secret)
        now = clock()
        for item, report in batch:
            summary.messages += 1
            if report.kind == "ignored":
                summary.ignored += 1
                summary.ignored_reasons[report.reason] = (
                    summary.ignored_reasons.get(report.reason, 0) + 1
                )
            elif report.kind == "unrecognised":
                summary.unrecognised += 1
                if len(summary.problems) < LISTED:
                    summary.problems.append(
                        {"message": item.key, "subject": report.subject, "reason": report.reason}
                    )
            else:
                for index, recipient in enumerate(report.recipients):
                    _record_report(connection, key, item, report, index, recipient, summary, now)


def _record_report(
    connection: Connection,
    token_key: bytes,
    item: MailItem,
    report: Report,
    index: int,
    recipient: RecipientReport,
    summary: BounceSummary,
    now: datetime,
) -> None:
    permanent = recipient.severity == "permanent"
    summary.bounces += 1
    if permanent:
        summary.permanent += 1
    else:
        summary.temporary += 1
    target = _match(connection, token_key, report, recipient)
    if target is None:
        summary.unmatched += 1
        if len(summary.unmatched_reports) < LISTED:
            summary.unmatched_reports.append(
                {"message": item.key, "recipient": recipient.recipient,
                 "status": recipient.status}
            )
    else:
        summary.matched += 1
    recorded = store.record(
        connection,
        key=_report_key(report, index, recipient),
        target=target,
        permanent=permanent,
        marks_subscriber=bounce_marks_subscriber(recipient.status),
        status=recipient.status,
        code=recipient.smtp_code,
        diagnostic=recipient.diagnostic,
        format=report.format,
        reported_at=report.date,
        now=now,
    )
    if not recorded.new:
        summary.already_imported += 1
    summary.deliveries_failed += recorded.delivery_failed
    summary.subscribers_bounced += recorded.subscriber_bounced


def _match(
    connection: Connection, token_key: bytes, report: Report, recipient: RecipientReport
) -> store.Target | None:
    """The delivery (or at least the subscriber) a report is about.

    The message mailer sent is known from its Message-ID (or a VERP token). mailer sends one
    recipient per message, so a report naming another subscriber's address (the message was
    forwarded to them) is about that subscriber: the address wins then. Last comes the
    addressee of the returned original.
    """
    sent = store.by_message_ids(connection, report.message_ids)
    if sent is None and report.verp:
        sent = _by_verp(connection, token_key, report.verp)
    named_key = _key_of(recipient.recipient) if recipient.recipient else None
    if named_key is not None and (sent is None or named_key != sent.email_key):
        named = store.by_address(connection, named_key)
        if named is not None:
            return named
    if sent is not None:
        return sent
    for address in report.original_recipients:
        found = _by_address(connection, address)
        if found is not None:
            return found
    return None


def _by_verp(connection: Connection, token_key: bytes, token: str) -> store.Target | None:
    subscriber_id = token_subscriber_id(token)
    if subscriber_id is None:
        return None
    candidate = store.by_subscriber(connection, subscriber_id)
    if candidate is None or not verify_token(
        token_key, token, candidate.subscriber_id, candidate.email_key
    ):
        return None
    return candidate


def _by_address(connection: Connection, address: str) -> store.Target | None:
    email_key = _key_of(address)
    return store.by_address(connection, email_key) if email_key is not None else None


def _key_of(address: str) -> str | None:
    try:
        return clean_address(address)[0].key
    except AddressError:
        return None


def _report_key(report: Report, index: int, recipient: RecipientReport) -> str:
    text = "\0".join(
        (report.fingerprint, str(index), recipient.recipient or "", recipient.status or "")
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
