"""Which refusals speak of the sender's budget rather than of the recipient; pure.

Relays with a budget (Gmail 500 messages a day, Google Workspace 2,000, Amazon SES's daily quota
and per-second rate, web hosts' "100 per hour") refuse once it is spent, each in its own words
and often with a 5xx. Read as the recipient's failure, that refusal would fail every delivery
left in the run although every address is fine: a refusal about the sender is never the
recipient's failure. The dispatcher asks `classify` about every reply that is not an acceptance,
and about refusals at connect time:

    BUDGET      the budget is spent: stop the run, pause the relay for hours
    SLOW_DOWN   too fast: fewer connections, a lower rate, retry without counting an attempt
    None        not the sender's budget: the ordinary policy (`mailer.sending.policy`) applies

RULES is the table, tried in order; the first row that matches decides. Replies about the
recipient come first and stay None even when worded "quota" (a full mailbox, greylisting, the
mailbox statuses x.1.1 … x.2.2): taking one for the sender's would retry a dead address forever.
Then budget wordings, then rate wordings (so "sender rate limit exceeded" slows down rather than
stops), then weaker "limit exceeded" wordings, then any 421 and the 4.7.x "try again later".
When in doubt a row prefers waiting to failing. Words are matched case-insensitively, without
accents ("refusé" is "refuse") and across the lines of a multi-line reply.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from mailer.core.delivery import Stage
from mailer.core.statuscodes import enhanced_status


class Refusal(StrEnum):
    BUDGET = "quota"  # budget spent: stop the run, pause the relay for hours
    SLOW_DOWN = "throttling"  # slow down: fewer connections, lower rate, retry without charging


@dataclass(frozen=True)
class Rule:
    """One row: a reply whose code, enhanced status and (folded) words all match is `kind`."""

    name: str
    kind: Refusal | None  # None: not the sender's budget, whatever later rows would say
    words: re.Pattern[str]  # searched in the folded text
    codes: re.Pattern[str]  # the whole reply code ("421", "4\d\d")
    statuses: re.Pattern[str]  # the whole enhanced status, "" when the reply has none

    def matches(self, code: int, status: str, folded: str) -> bool:
        return bool(
            self.codes.fullmatch(str(code))
            and self.statuses.fullmatch(status)
            and self.words.search(folded)
        )


def _row(name: str, kind: Refusal | None, words: str = "", *, codes: str = r"\d{3}",
         statuses: str = r".*") -> Rule:
    return Rule(name, kind, re.compile(words), re.compile(codes), re.compile(statuses))


# Budget wordings count only without an enhanced status or with one of these: policy (x.7.0,
# x.7.1) or too many recipients (x.5.3). Not, say, 4.7.3 "Organization queue quota exceeded":
# the recipient's organisation, not us.
_BUDGET_STATUSES = r"(?:[45]\.7\.[01]|[45]\.5\.3)?"

RULES: tuple[Rule, ...] = (
    # --- the recipient's, or an ordinary refusal: never the sender's budget ---
    # Postgrey "Greylisted, see http://postgrey...", Barracuda "Greylisted for 5 minutes":
    # per recipient, although it says "try again later" with a 4.7.1.
    _row("greylisting", None, r"gr[ae]y-?list"),
    # Gmail 4.2.2 "The email account that you tried to reach is over quota", "mailbox full",
    # Orange OFR_417 "Boite du destinataire pleine. Recipient overquota", "boîte pleine".
    _row("mailbox full", None,
         r"mailbox\b[\w ]{0,30}\bfull|mailbox (?:size |storage )?quota|\bover ?quota"
         r"|boite\b[\w ]{0,30}\bpleine|storage alloc"),
    # RFC 3463 mailbox statuses: no such user or domain (x.1.1, x.1.2, x.1.3, x.1.6, x.1.10),
    # mailbox disabled or full (x.2.1, x.2.2; Yandex 4.2.1 "The recipient has exceeded message
    # rate limit"). Not on a 421: La Poste's "421 4.2.1 Service refuse" closes the session.
    _row("mailbox status", None, codes=r"(?!421)\d{3}",
         statuses=r"[45]\.1\.(?:1|2|3|6|10)|[45]\.2\.[12]"),
    # --- budget spent ---
    # Gmail and Workspace: "550 5.4.5 Daily user sending quota exceeded", "Daily user sending
    # limit exceeded", "Daily SMTP relay limit exceeded for user".
    _row("gmail 5.4.5", Refusal.BUDGET, r"quota|limit", statuses=r"[45]\.4\.5"),
    # Exchange Online: "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
    # "550 5.1.90 ... you've reached your daily limit for message recipients".
    _row("exchange online", Refusal.BUDGET,
         r"submissionquotaexceeded|submission quota|daily limit for message recipients"),
    # Outlook.com / Hotmail: "554 5.2.0 ... OutboundSpamException; ... Actual verdict is
    # RefuseQuota, ShowTierUpgrade".
    _row("outlook.com", Refusal.BUDGET, r"refusequota"),
    # cPanel / Exim: "Domain example.org has exceeded the max emails per hour (100/100 (100%))
    # allowed", "... the max defers and failures per hour": an hourly budget.
    _row("cpanel hourly", Refusal.BUDGET, r"max (?:emails|defers and failures) per hour"),
    # SendGrid, at AUTH: "451 Authentication failed: Maximum credits exceeded".
    _row("sendgrid credits", Refusal.BUDGET, r"credits exceeded|maximum credits"),
    # Amazon SES "454 Throttling failure: Daily message quota exceeded.", cluebringer "Policy
    # rejection; Message count quota exceeded", OVH "550 5.7.1 Quota d'envoi dépassé",
    # "550 5.7.0 Trop de messages envoyés aujourd'hui", "over your relay quota of 500".
    _row("quota or daily", Refusal.BUDGET,
         r"quota|daily|per day|journali|quotidien|par jour|aujourd\W?hui",
         statuses=_BUDGET_STATUSES),
    # --- too fast: slow down ---
    # SES "454 Throttling failure: Maximum sending rate exceeded.", Gmail 4.7.28 "temporarily
    # rate limited", Exchange "421 4.4.2 Message submission rate for this client has exceeded
    # the configured limit", Postfix "450 4.7.1 Error: too much mail from", policyd-rate-limit
    # "Rate limit reach, retry later", Orange "Too many connections, slow down".
    _row("rate", Refusal.SLOW_DOWN,
         r"\brate.?limit|\brate exceeded|(?:sending|submission) rate|throttl|slow(?:er| down)"
         r"|too fast|too much mail"),
    # Microsoft "421 too many concurrent SMTP connections", Exchange Online "432 4.3.2
    # STOREDRV.ClientSubmit; sender thread limit exceeded", Postfix "421 4.7.0 Error: too many
    # connections from", Orange OFR004_104 "Trop de connexions".
    _row("connections", Refusal.SLOW_DOWN,
         r"too many (?:\w+ ){0,2}(?:connections|sessions)|concurrent connections"
         r"|connection (?:rate )?limit|thread limit|trop de connexions"),
    # RFC 5321 452 4.5.3, Postfix "450 4.7.1 Error: too many recipients from": we send one
    # recipient a transaction, so the limit is the session's or the period's.
    _row("too many recipients", Refusal.SLOW_DOWN, r"too many recipients|trop de destinataires"),
    # --- weaker budget wordings, once rate and size wordings are out of the way ---
    # Gmail 5.2.3 "Your message exceeded Google's message size limits", Orange OFR_514
    # "Taille limite du message atteinte": this message's size, not the budget.
    _row("message size", None, r"\bsize\b|too (?:big|large)|\btaille\b"),
    # SendGrid "451 You've exceeded your messaging limits", Mailgun "421 Domain example.org is
    # not allowed to send: recipient limit exceeded, try again after ...", "451 4.7.1 Vous avez
    # atteint la limite d'envoi".
    _row("sending limit", Refusal.BUDGET,
         r"limit exceeded|exceeded (?:\w+ ){0,3}?(?:sending|send|messag|limit)"
         r"|too many messages|(?:sending|message|messaging) limit|max(?:imum)? number of messages"
         r"|nombre maximum de messages|trop de messages|limite d\W?envoi",
         statuses=_BUDGET_STATUSES),
    # --- the relay closing or pushing back ---
    # RFC 5321 421, at any stage: Gmail "421 4.7.0 Try again later, closing connection.",
    # Orange "421 mwinf5c10 ME Service refusé, veuillez réessayer plus tard", Yahoo TSS04.
    _row("421", Refusal.SLOW_DOWN, codes=r"421"),
    # Microsoft "451 4.7.500 Server busy. Please try again later", Gmail "454 4.7.0 Too many
    # login attempts, please try again later". Not "451 4.3.0 ... try again later": ordinary.
    _row("4.7.x try later", Refusal.SLOW_DOWN,
         r"try (?:again )?later|essayer plus tard|service refus|server busy|temporarily deferred",
         codes=r"4\d\d", statuses=r"4\.7\.\d{1,3}"),
)

_LEADING_STATUS = re.compile(r"^\s*[245]\.\d{1,3}\.\d{1,3}\s*")


def _fold(text: str) -> str:
    """The reply's lines as one, without their status prefixes, casefolded, without accents."""
    joined = " ".join(_LEADING_STATUS.sub("", line) for line in text.splitlines())
    decomposed = unicodedata.normalize("NFKD", joined)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.casefold().split())


def _deciding_rule(code: int | None, text: str) -> Rule | None:
    """The first row of RULES that matches the reply, if any (None also for no reply, 2xx)."""
    if code is None or code < 400:
        return None
    status, folded = enhanced_status(text) or "", _fold(text)
    return next((rule for rule in RULES if rule.matches(code, status, folded)), None)


def classify(code: int | None, text: str, stage: Stage) -> Refusal | None:
    """None: not about the sender's budget (the ordinary policy applies: a 5.1.1 fails that
    one delivery, a greylisting 450 defers it, ...).

    `text` is the reply without its code, continuation lines joined with "\\n". The stage
    does not change the verdict: a relay's budget is spent at RCPT as at the end of DATA.
    """
    rule = _deciding_rule(code, text)
    return rule.kind if rule is not None else None


def describe(kind: Refusal) -> str:
    """The word for `kind` in messages and the store: "quota" or "throttling"."""
    return kind.value
