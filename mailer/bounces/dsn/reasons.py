"""Why a delivery failed, in a small vocabulary: from the status code, and from the words when
the code is generic (X.Y.0) or missing.

    mailbox unknown       5.1.1, 5.1.3, 5.1.10; "no such user", "utilisateur inconnu"
    domain unknown        5.1.2, 5.4.4 with "host not found"; "domain not found", "no MX"
    mailbox full          5.2.2, 4.2.2; "quota", "mailbox full", "boîte pleine"
    moved                 5.1.6; "has moved", "no longer at this address"
    blocked or spam       5.7.1 with "spam", "blocked", "blacklist"...; "not accepting mail from"
    policy                5.7.x, 5.6.x; "policy", "DMARC", "not authorized"
    message too large     5.2.3, 5.3.4; "too large", "size limit"
    relay or sender problem  5.1.7, 5.1.8, 5.3.x, 5.4.x, 5.5.x; "relay denied", "loop", "sender"
    expired               4.4.7, 5.4.7; "expired", "timed out", "after 30 attempts"
    delayed               a delay notice: Action: delayed, "will continue to be made", "retrying"
    auto-reply            an out-of-office message (never a recipient report)
    complaint             an abuse feedback report (ARF): the recipient called the message spam
    other                 none of the above

Only the reader decides the reason; what a reason does to a delivery and a subscriber is the
importer's allow-list (`mailer.bounces.trust`). A specific status code wins over the words
(an MTA that wrote 5.2.2 knew); a generic one (5.0.0, 5.3.0, 5.1.0...) lets the words decide,
so that `553 5.3.0 No such user here` is an unknown mailbox, not a mail-system problem. The
words are matched on `fold`ed text (lower case, accents removed), English and French.
"""

from __future__ import annotations

import re
from typing import Final, Literal

Reason = Literal[
    "mailbox unknown", "domain unknown", "mailbox full", "moved", "blocked or spam", "policy",
    "message too large", "relay or sender problem", "expired", "delayed", "auto-reply",
    "complaint", "other",
]
REASONS: Final[tuple[Reason, ...]] = (
    "mailbox unknown", "domain unknown", "mailbox full", "moved", "blocked or spam", "policy",
    "message too large", "relay or sender problem", "expired", "delayed", "auto-reply",
    "complaint", "other",
)

_BY_STATUS: dict[str, Reason] = {
    "1.1": "mailbox unknown", "1.3": "mailbox unknown", "1.10": "mailbox unknown",
    "1.2": "domain unknown", "1.6": "moved",
    "1.7": "relay or sender problem", "1.8": "relay or sender problem",
    "2.2": "mailbox full", "2.3": "message too large", "3.4": "message too large",
    "4.7": "expired", "7.26": "policy",
}
_BY_CLASS: dict[str, Reason] = {
    "3": "relay or sender problem", "4": "relay or sender problem",
    "5": "relay or sender problem", "6": "policy", "7": "policy",
}
# A notice saying the reporting MTA goes on trying: never a permanent failure.
DELAY_NOTICE = re.compile(
    r"will continue to be made|attempts will continue|will continue (?:to )?(?:try|attempt)"
    r"|still (?:be(?:ing)? )?(?:trying|retrying|retried)|not yet been delivered"
    r"|this is a warning|advisory[- ]only|has been postponed|remise (?:differee|retardee)"
)


def _any(*phrases: str) -> re.Pattern[str]:
    return re.compile("|".join(phrases))


# Most telling first: "Quota exceeded, message delivery failed" is a full mailbox; "not
# accepting mail from <sender>" a block, not an unknown mailbox.
_WORDS: tuple[tuple[Reason, re.Pattern[str]], ...] = (
    ("mailbox full", _any(
        r"quota", r"mailbox (?:is )?full", r"full mailbox", r"over ?quota", r"exceeded storage",
        r"storage (?:limit|full)", r"insufficient (?:storage|disk|space)",
        r"not enough (?:storage|space)", r"mail ?box size limit", r"mail ?folder is full",
        r"boite (?:aux lettres )?(?:est )?pleine", r"espace (?:disque )?insuffisant")),
    ("message too large", _any(
        r"too (?:large|big)", r"size limit",
        r"exceeds? (?:the )?(?:maximum |max )?(?:message )?size",
        r"message size", r"trop (?:volumineux|gros)", r"taille (?:maximale|du message)")),
    ("blocked or spam", _any(
        r"not accepting mail from", r"spam", r"black ?list", r"block ?list", r"blocked", r"\brbl\b",
        r"dnsbl", r"spamhaus", r"reputation", r"junk", r"refused by (?:the )?recipient",
        r"bloque", r"indesirable")),
    ("relay or sender problem", _any(
        r"relay(?:ing)? (?:access )?(?:denied|not permitted|refused)", r"unable to relay",
        r"sender (?:address )?(?:rejected|verify|verification|domain)", r"too many hops",
        r"hop count", r"mail loop", r"loops? back", r"loop detected", r"message looping",
        r"authentication required")),
    ("mailbox unknown", _any(
        r"no such (?:user|mailbox|recipient|address|account|person)", r"user(?:name)? unknown",
        r"unknown (?:user|recipient|local ?part|address|mailbox|account)",
        r"user (?:not found|doesn't exist|does not exist)",
        r"(?:recipient|address|mailbox|account) (?:not found|unknown|does not exist"
        r"|doesn't exist|is unknown|not listed|invalid|unavailable: user)",
        r"invalid (?:mailbox|recipient|address|user)",
        r"not a valid (?:mailbox|recipient|user|address)",
        r"mailbox (?:is )?(?:disabled|inactive|deactivated|closed|deleted)",
        r"account (?:has been |is )?(?:disabled|closed|deleted|deactivated|terminated|inactive)",
        r"no (?:mailbox|account) (?:here|by that name)", r"not our customer",
        r"(?:user|name|address) (?:is )?not (?:known|recogni[sz]ed)",
        r"doesn't have an? \S+ account", r"not listed in (?:the )?(?:\w+ )?directory",
        r"invalid (?:final delivery )?userid", r"does not have a final (?:e-?mail )?delivery point",
        r"no matches to nameserver query",
        r"unrouteable address", r"address (?:couldn't|could not) be found",
        r"no longer (?:valid|in use|active|exists?)", r"(?:utilisateur|destinataire) inconnu",
        r"adresse (?:inconnue|introuvable|inexistante|invalide)",
        r"boite (?:aux lettres )?(?:inexistante|introuvable|inconnue)", r"n'existe (?:pas|plus)",
        r"compte (?:inexistant|inconnu|desactive|supprime)",
        r"(?:destinataire|utilisateur) introuvable")),
    ("domain unknown", _any(
        r"domain (?:not found|unknown|does not exist|doesn't exist|name not found)",
        r"unknown domain", r"no such domain", r"host (?:not found|unknown)", r"unknown host",
        r"no mx", r"null mx", r"nxdomain", r"name or service not known", r"unroutable domain",
        r"domaine (?:inconnu|inexistant|introuvable)")),
    ("moved", _any(
        r"has moved", r"moved permanently", r"new (?:e-?mail )?address", r"a change d'adresse")),
    ("policy", _any(
        r"policy", r"dmarc", r"\bspf\b", r"dkim", r"not authori[sz]ed", r"unauthenticated",
        r"prohibited", r"not permitted", r"content rejected", r"virus", r"politique")),
    ("expired", _any(
        r"expired", r"timed? ?out", r"retry time", r"giving up", r"gave up",
        r"could not be delivered within", r"after \d+ (?:attempt|day|hour)",
        r"(?:delai|duree) (?:de )?(?:remise )?(?:expire|depasse)")),
)


def reason_of(status: str | None, text: str, *, delayed: bool = False) -> Reason:
    """The reason of one recipient's report: its status code, else its `fold`ed words.

    `delayed`: the report says it will try again (Action: delayed, a temporary notice); a
    delay is only ever "delayed", "mailbox full" or "expired", whatever else the words say.
    """
    if delayed:
        found = words_reason(text)
        if found in ("mailbox full", "expired"):
            return found
        return "mailbox full" if status in ("4.2.2", "5.2.2") else "delayed"
    if status is not None:
        by_status = _status_reason(status)
        if by_status is not None:
            return by_status
    found = words_reason(text)
    if found is not None:
        return found
    if status is not None:
        return _BY_CLASS.get(status.split(".")[1], "other")
    return "other"


def words_reason(text: str) -> Reason | None:
    """The first reason whose words are in `fold`ed `text` (lines joined), or None."""
    text = " ".join(text.split())
    return next((reason for reason, words in _WORDS if words.search(text)), None)


# Statuses whose detail is not specific enough to decide: the words do (then the class).
_GENERIC = frozenset({"4.4", "7.1"})


def _status_reason(status: str) -> Reason | None:
    """The reason a specific status names; None for a generic one (the words decide)."""
    _, subject, detail = status.split(".")
    if detail == "0" or f"{subject}.{detail}" in _GENERIC:
        return None
    return _BY_STATUS.get(f"{subject}.{detail}", _BY_CLASS.get(subject))
