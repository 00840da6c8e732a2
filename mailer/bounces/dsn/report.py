"""What reading one bounce gives: a frozen `Report`, a `RecipientReport` per failed recipient.

The limits are here too: a report is stored as it is, so no field may grow without bound
whatever the message holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from mailer.bounces.dsn.reasons import Reason

Kind = Literal["bounce", "complaint", "ignored", "unrecognised"]
Severity = Literal["permanent", "temporary"]
# Where the recipient was read: a delivery-status or feedback-report field ("dsn"), the
# bounce's X-Failed-Recipients header ("header"), a recognised MTA format's recipient line or
# a library detector ("format"), or the only address the report's text names ("text", a guess:
# it never ties a report to a subscriber by itself).
Source = Literal["dsn", "header", "format", "text"]

MAX_DIAGNOSTIC = 500
MAX_SUBJECT = 200
MAX_RECIPIENTS = 100  # failed recipients reported for one bounce (mailer sends one per message)


@dataclass(frozen=True)
class RecipientReport:
    recipient: str | None  # the failed address as an addr-spec, or None if not stated
    severity: Severity
    status: str | None  # enhanced status code "5.1.1", "4.4.7"... or None
    diagnostic: str  # one line, whitespace collapsed, at most 500 characters
    action: str | None  # RFC 3464 Action (failed, delayed) when given
    smtp_code: int | None = None  # the basic SMTP reply code (550, 452...) in the diagnostic
    reason: Reason = "other"  # why, in the small vocabulary of `reasons`
    source: Source = "dsn"


@dataclass(frozen=True)
class Report:
    kind: Kind
    fingerprint: str  # stable id of this bounce message
    recipients: tuple[RecipientReport, ...]  # non-empty for a bounce; a complaint's may be empty
    message_ids: tuple[str, ...]  # candidate Message-IDs of the original, most trusted first
    original_recipients: tuple[str, ...]  # addr-specs from the returned original's To
    format: str  # rfc3464, gmail, exchange, qmail, exim, text, flufl-*, autoreply, mdn, arf...
    reason: str  # for ignored/unrecognised: why, in English; "" for bounces
    subject: str  # decoded Subject of the bounce, one line, at most 200 characters
    date: datetime | None  # the bounce's Date, aware (a zone-less date is taken as UTC)
    verp: str | None  # TOKEN when the bounce was addressed to bounces+TOKEN@domain
    structured: bool = field(default=False)  # recipients read from a message/delivery-status
