"""flufl.bounce's detectors (Mailman's, one per MTA family) as a recogniser: who failed, in the
non-standard bounces whose shapes mailer's own text reading does not know.

The library only says which addresses failed, and whether for now or for good. The rest is
mailer's reading, as for any text bounce: each address's paragraph gives the status code, the
diagnostic and the reason; a delay notice ("delivery attempts will continue") is temporary
whatever the detector said. An address the library returns that is the bounce's own sender or
addressee, or a mail system's (MAILER-DAEMON, postmaster), is not a failed recipient.
Measured on the library's own corpus (tests/test_flufl_corpus.py), the order chosen in
`reading.RECOGNISERS` is the one that finds the most and bounces nobody else.
"""

from __future__ import annotations

from flufl.bounce import all_failures

from mailer.bounces.dsn._decoding import ADDR_ONLY, addresses, fold, header, headers, one_line
from mailer.bounces.dsn._originals import MSGID_LINE, MSGID_RE
from mailer.bounces.dsn._paragraphs import (
    DAEMON_LOCAL,
    diagnostic,
    section,
    text_sections,
)
from mailer.bounces.dsn._severity import smtp_code, status
from mailer.bounces.dsn.evidence import Evidence, Finding
from mailer.bounces.dsn.reasons import DELAY_NOTICE, reason_of
from mailer.bounces.dsn.report import MAX_DIAGNOSTIC, MAX_RECIPIENTS, RecipientReport


def recognise(evidence: Evidence) -> Finding | None:
    """A bounce when one of the library's detectors names a failed address."""
    try:
        temporary, permanent = all_failures(evidence.msg)
    except Exception:  # a detector that trips on a malformed message: not a finding
        return None
    failed = _addresses(evidence, permanent)
    delayed = [a for a in _addresses(evidence, temporary) if a.casefold() not in
               {p.casefold() for p in failed}]
    if not failed and not delayed:
        return None
    msg, text = evidence.msg, evidence.text
    sections = text_sections(msg, text, evidence.original_recipients)
    reports: list[RecipientReport] = []
    for address, said_temporary in [(a, False) for a in failed] + [(a, True) for a in delayed]:
        paragraph = section(sections, address) or text
        words = fold(paragraph)
        temporary_ = said_temporary or bool(DELAY_NOTICE.search(words))
        found = status(paragraph) or status(text)
        said = diagnostic(paragraph)
        reports.append(RecipientReport(
            recipient=address, severity="temporary" if temporary_ else "permanent",
            status=found, diagnostic=one_line(said, MAX_DIAGNOSTIC), action=None,
            smtp_code=smtp_code(said), reason=reason_of(found, words, delayed=temporary_),
            source="format"))
        if len(reports) >= MAX_RECIPIENTS:
            break
    family = evidence.family
    return Finding("bounce", tuple(reports), family.name if family else "flufl", "")


# The bounce's own parties (its envelope headers, Delivered-To and the like, are left out: some
# MTAs copy the failed recipient there).
_OWN = ("From", "Sender", "Reply-To", "Return-Path", "To", "Cc")
# The returned original's sender: the list itself, never a failed recipient.
_SENDERS = ("From", "Sender", "Return-Path", "Reply-To")


def _message_ids(evidence: Evidence) -> list[str]:
    """Message-IDs the bounce quotes: they look like addresses to some detectors."""
    found = MSGID_RE.findall(header(evidence.msg, "Message-ID"))
    for original in evidence.scan.originals + evidence.scan.inline:
        found += MSGID_RE.findall(header(original, "Message-ID"))
    for text in evidence.scan.all_text:
        found += MSGID_LINE.findall(text)
    return found


def _addresses(evidence: Evidence, found: frozenset[bytes]) -> list[str]:
    """The library's addresses as text, without the bounce's own parties or mail systems."""
    own = {address.casefold() for address in addresses(
        [value for name in _OWN for value in headers(evidence.msg, name)]
        + [value for original in evidence.scan.originals + evidence.scan.inline
           for name in _SENDERS for value in headers(original, name)])}
    own |= {message_id.strip("<>").casefold() for message_id in _message_ids(evidence)}
    kept: list[str] = []
    for raw in sorted(found):
        address = raw.decode("ascii", "replace").strip().strip("<>")
        key = address.casefold()
        if (ADDR_ONLY.match(address) and key not in own
                and key.split("@", 1)[0] not in DAEMON_LOCAL
                and key not in {k.casefold() for k in kept}):
            kept.append(address)
    return kept
