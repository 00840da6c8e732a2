"""RFC 3464 delivery-status reports: a recipient per field block, and success notices.

Severity: Action: failed → permanent, even with a 4.x.x Status (the reporting MTA retried and
gave up); Action: delayed → temporary; no Action: the Status class, then the SMTP code of the
Diagnostic-Code, else permanent; a notice saying delivery attempts will continue is temporary
unless its Action says failed. A report whose recipients were all delivered, relayed or
expanded is a success notice: ignored. The recipient is the Original-Recipient (the address
mailer sent to) when given, else the Final-Recipient.
"""

from __future__ import annotations

from mailer.bounces.dsn._decoding import ADDR_ONLY, ADDR_RE, fold, one_line
from mailer.bounces.dsn._paragraphs import diagnostic, section, text_sections
from mailer.bounces.dsn._severity import severity_of_codes, smtp_code, status
from mailer.bounces.dsn.evidence import Evidence, Finding
from mailer.bounces.dsn.reasons import DELAY_NOTICE, reason_of
from mailer.bounces.dsn.report import MAX_DIAGNOSTIC, MAX_RECIPIENTS, RecipientReport, Severity


def recognise(evidence: Evidence) -> Finding | None:
    """A bounce with the failed and delayed recipients, or an ignored success notice."""
    blocks = [block for block in evidence.scan.ds if _is_recipient_block(block)]
    if not blocks:
        return None
    sections = text_sections(evidence.msg, evidence.text, evidence.original_recipients)
    reports, successes = _recipients(blocks, sections)
    family = evidence.family
    format_ = family.name if family is not None and family.names_dsn else "rfc3464"
    if reports:
        return Finding("bounce", tuple(reports), format_, "", structured=True)
    if successes:
        return Finding("ignored", (), format_, "delivery notification of success",
                       structured=True)
    return None


def _is_recipient_block(block: dict[str, str]) -> bool:
    return any(k in block for k in ("final-recipient", "original-recipient", "action", "status"))


def field_address(value: str) -> str | None:
    """The address of a Final-Recipient / Original-Recipient value ("rfc822; bob@exemple.fr")."""
    value = value.split(";", 1)[1] if ";" in value else value
    value = value.strip().strip("<>").strip()
    if ADDR_ONLY.match(value):
        return value
    match = ADDR_RE.search(value)
    return match.group(0) if match else None


def _recipients(
    blocks: list[dict[str, str]], sections: dict[str, str]
) -> tuple[list[RecipientReport], int]:
    """Failed and delayed recipients of the report, and how many were delivered."""
    reports: list[RecipientReport] = []
    successes = 0
    for block in blocks[:MAX_RECIPIENTS]:
        # Original-Recipient is the address the sender gave (mailer's subscriber);
        # Final-Recipient may be where an alias or a forward led.
        recipient = field_address(block.get("original-recipient", "")) or field_address(
            block.get("final-recipient", ""))
        action = block.get("action", "").split(" ", 1)[0].strip().lower() or None
        found = status(block.get("status", ""), "245")
        said = block.get("diagnostic-code", "")
        code = smtp_code(said)
        severity: Severity | None
        if action in ("delivered", "relayed", "expanded"):
            severity = None
        elif action == "failed":
            severity = "permanent"
        elif action == "delayed":
            severity = "temporary"
        elif found is not None or code is not None:
            severity = severity_of_codes(block.get("status", "") + " " + said)
        else:
            severity = "permanent"
        if severity is None:
            successes += 1
            continue
        # no Diagnostic-Code: the human-readable part's paragraph on this recipient, if any
        if not said and recipient is not None:
            said = diagnostic(section(sections, recipient))
        words = fold(said + "\n" + (section(sections, recipient) if recipient else ""))
        if severity == "permanent" and action != "failed" and DELAY_NOTICE.search(words):
            severity = "temporary"  # "delivery attempts will continue": never permanent
        if not said and found is not None:
            said = f"Status: {found}" + (f" ({action})" if action else "")
        reports.append(RecipientReport(
            recipient=recipient, severity=severity, status=found,
            diagnostic=one_line(said, MAX_DIAGNOSTIC), action=action,
            smtp_code=code if code is not None else smtp_code(said),
            reason=reason_of(found, words, delayed=severity == "temporary")))
    return reports, successes
