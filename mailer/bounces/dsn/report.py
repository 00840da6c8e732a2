"""What reading one bounce gives: a frozen `Report`, a `RecipientReport` per failed recipient.

The limits are here too: a report is stored as it is, so no field may grow without bound
whatever the message holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Kind = Literal["bounce", "ignored", "unrecognised"]
Severity = Literal["permanent", "temporary"]

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


@dataclass(frozen=True)
class Report:
    kind: Kind
    fingerprint: str  # stable id of this bounce message
    recipients: tuple[RecipientReport, ...]  # non-empty iff kind == "bounce"
    message_ids: tuple[str, ...]  # candidate Message-IDs of the original, most trusted first
    original_recipients: tuple[str, ...]  # addr-specs from the returned original's To
    format: str  # rfc3464, gmail, exchange, qmail, exim, text, autoreply, mdn, arf, unknown
    reason: str  # for ignored/unrecognised: why, in English; "" for bounces
    subject: str  # decoded Subject of the bounce, one line, at most 200 characters
    date: datetime | None  # the bounce's Date, aware (a zone-less date is taken as UTC)
    verp: str | None  # TOKEN when the bounce was addressed to bounces+TOKEN@domain
    structured: bool = field(default=False)  # recipients read from a message/delivery-status
