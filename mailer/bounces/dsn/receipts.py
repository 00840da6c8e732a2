"""Reports that are not bounces: read receipts (ignored) and abuse reports (left for a human)."""

from __future__ import annotations

from mailer.bounces.dsn.evidence import Evidence, Finding


def read_receipt(evidence: Evidence) -> Finding | None:
    """A disposition notification (RFC 8098): the message was delivered, and even opened."""
    scan = evidence.scan
    if scan.mdn or "disposition-notification" in scan.report_types:
        return Finding("ignored", (), "mdn", "read receipt (disposition notification)")
    return None


def abuse_report(evidence: Evidence) -> Finding | None:
    """An abuse feedback report (ARF, RFC 5965): a complaint, which a person should read."""
    scan = evidence.scan
    if scan.arf or "feedback-report" in scan.report_types:
        return Finding("unrecognised", (), "arf", "abuse feedback report (ARF), not a bounce")
    return None
