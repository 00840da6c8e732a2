"""`mailer bounces import`: a mailbox of bounces in, the delivery ledger brought up to date.

Each message is parsed (`dsn.parse`), each recipient report in it is tied to the delivery it
is about, or to none, by the trust model, and what it may change is decided by the allow-list
on its reason (both `trust`); it is recorded in a batch transaction. An untrusted report is
stored and listed as unmatched, changing nobody; an abuse complaint unsubscribes; auto-replies,
read receipts and success notices are ignored; what cannot be understood is counted and
listed, never fatal. Every report is stored under a key, so importing the same mailbox twice
changes nothing.

What a message may cost (its size, batches, messages known from an earlier run and skipped
before parsing, one that cannot be recorded set aside) is `intake`'s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from mailer.bounces import intake, trust
from mailer.bounces.dsn import RecipientReport, Report
from mailer.bounces.mailboxes import ImapFolder, Mailbox, MailItem
from mailer.bounces.trust import rules_of as rules_of
from mailer.core.clock import Clock, system_clock
from mailer.core.states import SubscriberStatus
from mailer.store import bounces as store
from mailer.store.engine import write_transaction
from mailer.store.mailbox_state import last_uid
from mailer.store.meta import token_secret

BATCH = intake.BATCH  # messages recorded per transaction
LISTED = 100  # unrecognised messages and unmatched reports listed in the summary

Progress = Callable[[int, int | None], None]


@dataclass
class BounceSummary:
    """What one import found. Reports are counted one per recipient: `bounces` is
    permanent + temporary, and also matched + unmatched. `untrusted`: reports tied to no
    delivery (the unmatched bounces, and complaints), recorded but changing nobody;
    `complaints`: subscribers unsubscribed by an abuse feedback report."""

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
    complaints: int = 0
    untrusted: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # bounce reports by reason
    already_imported: int = 0
    known: int = 0  # messages an earlier import recorded: not parsed again
    skipped: int = 0  # messages not imported: too large, or their reports could not be stored
    skipped_messages: list[dict[str, str]] = field(default_factory=list)
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
            "complaints": self.complaints,
            "untrusted": self.untrusted,
            "reasons": self.reasons,
            "deliveries_failed": self.deliveries_failed,
            "already_imported": self.already_imported,
            "unrecognised": self.unrecognised,
            "ignored_reasons": self.ignored_reasons,
            "unrecognised_messages": self.problems,
            "unmatched_reports": self.unmatched_reports,
            "known": self.known,
            "skipped": self.skipped,
            "skipped_messages": self.skipped_messages,
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
    rules: trust.Rules | None = None,
) -> BounceSummary:
    """Parse and record every message of `items`, BATCH messages per transaction (what an
    earlier run recorded is skipped unparsed: see `intake`). `rules`: the trust model's
    settings (default: 30 days, 3 reports in 14 days, no VERP)."""
    summary = BounceSummary(source)
    settings = rules or trust.Rules()
    intake.import_items(
        engine,
        items,
        summary,
        lambda batch: _record_batch(engine, batch, summary, secret, clock, settings),
        folder=items.folder if isinstance(items, Mailbox) else None,
        clock=clock,
        progress=(lambda: progress(summary.messages, total)) if progress is not None else None,
    )
    return summary


def resume_point(engine: Engine) -> Callable[[ImapFolder], int]:
    """For open_mailbox(resume=...): the last UID recorded from an IMAP folder (0: none, or
    another UIDVALIDITY), so that only newer messages are fetched."""

    def last_recorded(folder: ImapFolder) -> int:
        with engine.connect() as connection:
            return last_uid(
                connection, folder.host, folder.user, folder.folder, folder.uidvalidity
            )

    return last_recorded


def _record_batch(
    engine: Engine,
    batch: list[tuple[MailItem, Report]],
    summary: BounceSummary,
    secret: str | None,
    clock: Clock,
    rules: trust.Rules,
) -> None:
    if not batch:
        return
    with write_transaction(engine) as connection:
        key = token_secret(connection, secret)
        now = clock()
        rules = replace(rules, own_addresses=rules.own_addresses | trust.list_keys(connection))
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
                    _record_report(connection, key, item, report, index, recipient, summary, now,
                                   rules)


def _record_report(
    connection: Connection,
    token_key: bytes,
    item: MailItem,
    report: Report,
    index: int,
    recipient: RecipientReport,
    summary: BounceSummary,
    now: datetime,
    rules: trust.Rules,
) -> None:
    complaint = report.kind == "complaint"
    if not complaint:
        summary.bounces += 1
        if recipient.severity == "permanent":
            summary.permanent += 1
        else:
            summary.temporary += 1
        summary.reasons[recipient.reason] = summary.reasons.get(recipient.reason, 0) + 1
    tied = trust.tie(connection, token_key, report, recipient, rules, now)
    if tied.target is None:
        summary.untrusted += 1
        summary.unmatched += not complaint
        if len(summary.unmatched_reports) < LISTED:
            summary.unmatched_reports.append(
                {"message": item.key, "recipient": recipient.recipient,
                 "status": recipient.status, "reason": recipient.reason,
                 "because": tied.because}
            )
    else:
        summary.matched += not complaint
    change = trust.effect(connection, report, recipient, tied, rules, now)
    recorded = store.record(
        connection,
        key=_report_key(report, index, recipient),
        target=tied.target,
        severity=recipient.severity,
        status=recipient.status,
        code=recipient.smtp_code,
        diagnostic=recipient.diagnostic,
        format=report.format,
        reason=recipient.reason,
        trust=tied.by or "untrusted",
        reported_at=report.date,
        now=now,
        fail_delivery=change.fail_delivery,
        subscriber_status=change.subscriber_status,
    )
    if not recorded.new:
        summary.already_imported += 1
    summary.deliveries_failed += recorded.delivery_failed
    if recorded.subscriber_changed:
        if change.subscriber_status is SubscriberStatus.UNSUBSCRIBED:
            summary.complaints += 1
        else:
            summary.subscribers_bounced += 1


def _report_key(report: Report, index: int, recipient: RecipientReport) -> str:
    text = "\0".join(
        (report.fingerprint, str(index), recipient.recipient or "", recipient.status or "")
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
