"""Disposition notifications and feedback reports: read receipts (ignored), rejections by the
recipient's mail system (bounces), abuse feedback reports (complaints).

A disposition notification whose Disposition says the message was deleted or denied unread is
a Sieve "reject" (RFC 5429) or Dovecot's "automatically rejected mail" (over quota, say): a
bounce for its Final-Recipient, the reason in its text. Every other one is a read receipt.
"""

from __future__ import annotations

from mailer.bounces.dsn._decoding import one_line
from mailer.bounces.dsn._paragraphs import diagnostic
from mailer.bounces.dsn._severity import smtp_code, status
from mailer.bounces.dsn.evidence import Evidence, Finding
from mailer.bounces.dsn.reasons import reason_of
from mailer.bounces.dsn.report import MAX_DIAGNOSTIC, MAX_RECIPIENTS, RecipientReport
from mailer.bounces.dsn.rfc3464 import field_address


def rejection(evidence: Evidence) -> Finding | None:
    """A disposition notification that says the message was refused: a bounce."""
    scan = evidence.scan
    reports: list[RecipientReport] = []
    for block in scan.mdn_fields:
        disposition = block.get("disposition", "").lower()
        modifiers = disposition.rpartition(";")[2]
        if not any(word in modifiers for word in ("deleted", "denied", "rejected", "failed")):
            continue
        address = field_address(block.get("original-recipient", "")) or field_address(
            block.get("final-recipient", ""))
        words = evidence.folded_text
        found = status(evidence.text)
        reports.append(RecipientReport(
            recipient=address, severity="permanent", status=found,
            diagnostic=one_line(diagnostic(evidence.text), MAX_DIAGNOSTIC), action=None,
            smtp_code=smtp_code(evidence.text), reason=reason_of(found, words), source="dsn"))
    if not reports:
        return None
    return Finding("bounce", tuple(reports[:MAX_RECIPIENTS]), "mdn", "", structured=True)


def read_receipt(evidence: Evidence) -> Finding | None:
    """A disposition notification (RFC 8098): the message was delivered, and even opened."""
    scan = evidence.scan
    if scan.mdn or "disposition-notification" in scan.report_types:
        return Finding("ignored", (), "mdn", "read receipt (disposition notification)")
    return None


# Feedback types that say the recipient called the message spam (RFC 5965, 6650): the
# others (virus, auth-failure, not-spam) are left for a human.
_COMPLAINTS = frozenset({"abuse", "fraud", "other"})


def abuse_report(evidence: Evidence) -> Finding | None:
    """An abuse feedback report (ARF, RFC 5965: Yahoo's, Outlook's, AOL's feedback loops...):
    the recipient called the message spam. A complaint about the recipient named in
    Original-Rcpt-To, or, when the provider redacted it, about the delivery the returned
    original's Message-ID names."""
    scan = evidence.scan
    if not (scan.arf or "feedback-report" in scan.report_types):
        return None
    kinds = {block.get("feedback-type", "").split(";")[0].strip().lower()
             for block in scan.arf_fields} - {""}
    if not kinds & _COMPLAINTS:
        return Finding("unrecognised", (), "arf",
                       f"feedback report ({', '.join(sorted(kinds)) or 'no type'}), not a "
                       "complaint")
    named = [field_address(value) for block in scan.arf_fields
             for key, value in block.items() if key == "original-rcpt-to"]
    recipients: list[str | None] = [address for address in named if address] or [None]
    said = one_line(" ".join(sorted(kinds)) + " feedback report", MAX_DIAGNOSTIC)
    reports = tuple(RecipientReport(
        recipient=address, severity="permanent", status=None, diagnostic=said, action=None,
        reason="complaint", source="dsn") for address in recipients[:MAX_RECIPIENTS])
    return Finding("complaint", reports, "arf", "", structured=True)
