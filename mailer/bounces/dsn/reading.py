"""The reader: bytes parsed once, the recognisers asked in order, the first finding reported.

What every `Report` carries whatever its kind (fingerprint, Message-IDs of the original, its
addressees, subject, date, VERP token) is read here, before any recogniser runs, since the
caller matches ignored and unrecognised messages too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from mailer.bounces.dsn import autoreply, library, plaintext, receipts, rfc3464
from mailer.bounces.dsn._decoding import (
    date,
    fingerprint_bytes,
    header,
    message_of,
    normalise,
    one_line,
)
from mailer.bounces.dsn._mime import read_parts
from mailer.bounces.dsn._originals import MSGID_RE, message_ids, original_recipients, verp
from mailer.bounces.dsn.evidence import Evidence, Finding, Recogniser
from mailer.bounces.dsn.report import MAX_SUBJECT, Kind, Report

# The first that returns a Finding decides. The order is the precedence of the signals: a
# delivery-status report beats everything; a bounce beats an auto-reply (Postfix and Exim mark
# their bounces "Auto-Submitted: auto-replied"); an auto-reply beats a bounce-like message
# without failure text.
RECOGNISERS: tuple[Recogniser, ...] = (
    rfc3464.recognise,
    receipts.rejection,
    receipts.read_receipt,
    receipts.abuse_report,
    library.recognise,
    plaintext.recognise,
    autoreply.recognise,
    plaintext.bounce_like,
)
_NOT_A_BOUNCE = Finding("unrecognised", (), "unknown",
                        "not a bounce: no status or failure text found")


def parse(raw: bytes) -> Report:
    """The `Report` of one message. Never raises: at worst kind "unrecognised" with a reason."""
    try:
        return _parse(bytes(raw))
    except Exception as exc:  # the promise is "never raises": whatever was missed is unrecognised
        try:
            fingerprint = hashlib.sha256(fingerprint_bytes(normalise(bytes(raw)))).hexdigest()
        except Exception:
            fingerprint = hashlib.sha256(b"").hexdigest()
        return _other("unrecognised", fingerprint, f"unparseable message ({type(exc).__name__})")


def _parse(raw: bytes) -> Report:
    data = normalise(raw)
    if not data.strip():
        return _other("unrecognised", hashlib.sha256(fingerprint_bytes(data)).hexdigest(),
                      "empty message")
    msg = message_of(data)
    own_id = " ".join(header(msg, "Message-ID").split())
    fingerprint_source = own_id.encode("utf-8", "surrogateescape") if own_id else (
        fingerprint_bytes(data))
    fingerprint = hashlib.sha256(fingerprint_source).hexdigest()
    subject = one_line(header(msg, "Subject"), MAX_SUBJECT)
    scan = read_parts(msg)
    ids = message_ids(msg, scan, set(MSGID_RE.findall(own_id)))
    originals = original_recipients(scan)
    base = _Base(fingerprint=fingerprint, message_ids=ids, original_recipients=originals,
                 subject=subject, date=date(header(msg, "Date")), verp=verp(msg))

    if not msg.keys() and not scan.ds:
        return base.make(Finding("unrecognised", (), "unknown",
                                 "not an e-mail message: no header found"))
    evidence = Evidence(msg, subject, scan, originals)
    for recognise in RECOGNISERS:
        finding = recognise(evidence)
        if finding is not None:
            return base.make(finding)
    return base.make(_NOT_A_BOUNCE)


@dataclass(frozen=True)
class _Base:
    fingerprint: str
    message_ids: tuple[str, ...]
    original_recipients: tuple[str, ...]
    subject: str
    date: datetime | None
    verp: str | None

    def make(self, finding: Finding) -> Report:
        return Report(kind=finding.kind, fingerprint=self.fingerprint,
                      recipients=finding.recipients, message_ids=self.message_ids,
                      original_recipients=self.original_recipients, format=finding.format,
                      reason=finding.reason, subject=self.subject, date=self.date,
                      verp=self.verp, structured=finding.structured)


def _other(kind: Kind, fingerprint: str, reason: str) -> Report:
    return Report(kind=kind, fingerprint=fingerprint, recipients=(), message_ids=(),
                  original_recipients=(), format="unknown", reason=reason, subject="", date=None,
                  verp=None)
