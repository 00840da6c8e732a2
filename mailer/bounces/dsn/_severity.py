"""Permanent or temporary: the status codes, SMTP codes and words a reporting MTA uses to say so.

Phrase patterns are matched against `fold`ed text: lower case, accents removed, ’ → '.
"""

from __future__ import annotations

import re

from mailer.bounces.dsn.report import Severity

_ENHANCED = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
SMTP_CODE = re.compile(r"(?<![\w.,/:+=-])([245][0-5]\d)(?=[ :-]|$)", re.MULTILINE)
_PERMANENT_WORDS = re.compile(
    r"permanent|given up|gave up|giving up|will not (?:be )?retr|won't (?:be )?retr"
    r"|not going to try again|no further (?:attempts|retries)|definiti|erreur fatale"
)
_TEMPORARY_WORDS = re.compile(
    r"delayed|delivery (?:is )?delay|will (?:be )?retr(?:y|ied)"
    r"|will continue (?:to )?(?:try|attempt)"
    r"|continue (?:delivery )?attempts|still (?:be(?:ing)? )?(?:trying|retrying|retried)"
    r"|not yet been delivered|hasn't been delivered yet|this is a warning|warning message only"
    r"|you do not need to resend|could not send message for past|temporary (?:failure|error"
    r"|problem)|retard|\bdifferee?s?\b|nouvelle tentative|nouvel essai"
)
# Not read for those words: "You'll be notified if the delivery fails permanently",
# "Eventually ... will give up" say what may happen, not what did.
_CONDITIONAL = re.compile(r"\b(?:if|unless|when|eventually|si|lorsque|quand)\b[^.;:!?\n]*")


def status(text: str, classes: str = "45") -> str | None:
    """The first enhanced status code ("5.1.1") of one of these classes in `text`."""
    for match in _ENHANCED.finditer(text):
        if match.group(1) in classes:
            return ".".join(match.groups())
    return None


def smtp_code(text: str) -> int | None:
    match = SMTP_CODE.search(text)
    return int(match.group(1)) if match else None


def severity_of_words(text: str) -> Severity | None:
    """From `fold`ed text; both kinds of words: permanent (the MTA has given up)."""
    text = _CONDITIONAL.sub(" ", text)
    if _PERMANENT_WORDS.search(text):
        return "permanent"
    if _TEMPORARY_WORDS.search(text):
        return "temporary"
    return None


def severity_of_codes(text: str) -> Severity | None:
    """The enhanced status code's class, else the SMTP code's: 5 → permanent, 4 → temporary."""
    found = status(text)
    if found is not None:
        return "permanent" if found[0] == "5" else "temporary"
    code = smtp_code(text)
    if code is not None and code >= 400:
        return "permanent" if code >= 500 else "temporary"
    return None
