"""Non-standard bounces: no delivery-status part, so the failed recipients are read from the text.

A message is a bounce candidate with a strong signal (a delivery-status part, an
X-Failed-Recipients header, a mail-system sender), or, unless its subject is an out-of-office
one, with a bounce subject in English or French, or as an Auto-Submitted: auto-generated message
that returns an original with failure text. A candidate is a bounce when it also has failure
text, a 4.x.x/5.x.x status or X-Failed-Recipients; else it is "bounce-like", unrecognised.

Severity of each recipient: the subject first, then the reporting MTA's words in the
recipient's own paragraph, then in the whole report (see `_severity`), then the enhanced status
or SMTP code, in the paragraph then anywhere; a failure notice with none of these is permanent.
"""

from __future__ import annotations

import re

from mailer.bounces.dsn._decoding import addresses, fold, header, headers, one_line
from mailer.bounces.dsn._paragraphs import diagnostic, line_sections, named_in_text, section
from mailer.bounces.dsn._severity import severity_of_codes, severity_of_words, smtp_code, status
from mailer.bounces.dsn.autoreply import has_autoreply_subject
from mailer.bounces.dsn.evidence import Evidence, Finding
from mailer.bounces.dsn.reasons import DELAY_NOTICE, reason_of
from mailer.bounces.dsn.report import (
    MAX_DIAGNOSTIC,
    MAX_RECIPIENTS,
    RecipientReport,
    Severity,
    Source,
)

# A mail system as sender: MAILER-DAEMON, postmaster, Exchange's MicrosoftExchange<hex>@
_DAEMON_FROM = re.compile(
    r"(?:^|[\s<\"'(])(?:mailer-daemon|mailer_daemon|mail-daemon|maildaemon|postmaster"
    r"|microsoftexchange[0-9a-f]{32})(?:@|>|\s|$)"
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver(?:able|ed)|non-?deliverable|delivery status notification|returned mail"
    r"|mail delivery (?:failed|failure|system|subsystem)|failure notice|delivery (?:has )?failed"
    r"|delivery failure|failed delivery|returned to sender|delayed mail|delivery delayed"
    r"|warning: could not send|message not delivered|could not be delivered"
    r"|non[ -]?remis|echec de (?:la )?(?:remise|distribution|livraison)|non distribuable"
    r"|non delivre|impossible de (?:remettre|distribuer)|remise (?:differee|retardee)"
    r"|notification d'etat de (?:la )?remise|message retourne|retour de (?:courrier|message)"
)
_FAILURE_TEXT = re.compile(
    r"could ?n[o']t be delivered|could ?n[o']t deliver|was ?n[o']t delivered|not been delivered"
    r"|not be delivered|undeliverable|undelivered|delivery (?:has )?failed|delivery failure"
    r"|failed permanently|permanent (?:error|failure)|cannot be reached|did not reach"
    r"|unable to deliver|(?:was|were) ?n[o']t able to deliver|no mailbox here|user unknown"
    r"|unknown user|mailbox unavailable|address rejected|address (?:couldn't|could not) be found"
    r"|delivery to the following recipients? (?:failed|has been delayed|was delayed)"
    r"|(?:has|have) been delayed|delivery (?:is )?delayed|delayed delivery|could not send message"
    r"|not yet been delivered|returning message to sender|following address(?:es)? failed"
    r"|n'a pas pu etre (?:remis|distribue|delivre|transmis|achemine|envoye)"
    r"|n'a pas ete (?:remis|distribue|delivre)|non remis|non distribue"
    r"|echec de (?:la )?(?:remise|distribution|livraison)|impossible de (?:remettre|distribuer"
    r"|delivrer|livrer)|adresse (?:inconnue|introuvable)|destinataire inconnu"
    r"|remise (?:differee|retardee)|retard de (?:la )?(?:remise|distribution|livraison)"
    r"|\bretardee?s?\b"
)
_SUBJECT_TEMPORARY = re.compile(
    r"\(delay\)|delayed mail|delivery delayed|warning: could not send|still being retried"
    r"|remise (?:differee|retardee)"
)
_SUBJECT_PERMANENT = re.compile(r"\(failure\)|failed permanently")


def recognise(evidence: Evidence) -> Finding | None:
    """A bounce candidate with failure text or a status code: its recipients."""
    if not _candidate(evidence):
        return None
    reports = _recipients(evidence)
    if not reports:
        return None
    family = evidence.family
    return Finding("bounce", tuple(reports), family.name if family else "text", "")


def bounce_like(evidence: Evidence) -> Finding | None:
    """A candidate that `recognise` found nothing in (and no auto-reply): unrecognised, said so."""
    if not _candidate(evidence):
        return None
    family = evidence.family
    return Finding("unrecognised", (), family.name if family else "unknown",
                   "bounce-like message but no failure text or status code found")


def _candidate(evidence: Evidence) -> bool:
    # Strong bounce signals beat an out-of-office subject; a bounce subject does not, since its
    # words may come from the original subject it quotes.
    msg, scan = evidence.msg, evidence.scan
    strong_bounce = bool(scan.ds or "delivery-status" in scan.report_types
                         or msg.get("X-Failed-Recipients") is not None
                         or _DAEMON_FROM.search(evidence.sender))
    auto_generated = fold(header(msg, "Auto-Submitted")).startswith("auto-generated")
    return strong_bounce or (not has_autoreply_subject(evidence) and (
        bool(_BOUNCE_SUBJECT.search(evidence.folded_subject))
        or (auto_generated and bool(scan.originals or scan.inline)
            and bool(_FAILURE_TEXT.search(evidence.folded_text)))))


def _recipients(evidence: Evidence) -> list[RecipientReport]:
    """Recipients of a bounce without a delivery-status part, read from its text."""
    msg, text, folded = evidence.msg, evidence.text, evidence.folded_text
    failed = addresses(headers(msg, "X-Failed-Recipients"))
    if not (failed or _FAILURE_TEXT.search(folded) or status(text)):
        return []
    sections = line_sections(msg, text)
    source: Source = "header" if failed else "format"
    if not sections:
        sections = named_in_text(msg, text, evidence.original_recipients)
        source = "header" if failed else "text"
    if failed:
        chosen: list[str | None] = list(failed)
    else:
        chosen = list(sections) or [None]
    folded_subject = evidence.folded_subject
    by_subject: Severity | None = (
        "temporary" if _SUBJECT_TEMPORARY.search(folded_subject)
        else "permanent" if _SUBJECT_PERMANENT.search(folded_subject) else None)
    reports: list[RecipientReport] = []
    for recipient in chosen[:MAX_RECIPIENTS]:
        paragraph = section(sections, recipient) if recipient else ""
        if not paragraph.strip():
            paragraph = text
        words = fold(paragraph)
        severity = (by_subject or severity_of_words(words)
                    or severity_of_words(folded) or severity_of_codes(paragraph)
                    or severity_of_codes(text) or "permanent")
        if DELAY_NOTICE.search(words) or DELAY_NOTICE.search(folded):
            severity = "temporary"  # "delivery attempts will continue": never permanent
        said = diagnostic(paragraph)
        found = status(paragraph) or status(text)
        reports.append(RecipientReport(
            recipient=recipient, severity=severity, status=found,
            diagnostic=one_line(said, MAX_DIAGNOSTIC), action=None,
            smtp_code=smtp_code(said),
            reason=reason_of(found, words if paragraph is not text else folded,
                             delayed=severity == "temporary"),
            source=source))
    return reports
