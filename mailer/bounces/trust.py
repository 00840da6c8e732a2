"""Which delivery a report is about, and what it may change: the trust model and the allow-list.

Anyone can send mail to the bounce mailbox, so a report changes a subscriber only when it is
tied to a delivery mailer sent. mailer sends one recipient per message: a genuine report is
about one delivery. Most trusted first:

    verp         the bounce came back to LOCAL+TOKEN@domain and the token's MAC verifies: the
                 subscriber it names, with the delivery the Message-ID names if it is theirs,
                 else their latest one that went out
    message-id   the returned original's Message-ID is one mailer gave a delivery. New ids carry
                 a MAC of the delivery (`<nonce.id.MAC@domain>`): one copy predicts no other;
                 ids queued before keep matching
    address      only the address the report names as a failed recipient (a delivery-status or
                 feedback-report field, X-Failed-Recipients, a recognised MTA format's recipient
                 line), never one guessed from the text, the returned original's headers, a
                 `Received: ... for` line or the sender; and only when a delivery went to that
                 subscriber within `recent` (30 days), the report names at most 5 recipients,
                 the address is not the list's own, and VERP is not configured (then every
                 genuine bounce carries a token, and an address-only report is recorded but
                 bounces nobody)

A report tied by token or Message-ID changes only the delivery it is tied to, whatever address
it names. Anything else is untrusted: recorded (without a delivery or subscriber), listed as
unmatched with why, changing nobody.

What a tied report changes is an allow-list on its reason (`dsn.reasons`):

    mailbox unknown, domain unknown, moved   permanent: fails the delivery, bounces the
                                             subscriber
    mailbox full                             fails the delivery (when permanent); bounces the
                                             subscriber when it repeats (3 reports in 14 days)
    the same "gone" reasons, temporary       nothing, until they repeat as above
    complaint                                unsubscribes the subscriber (an import never
                                             subscribes them again)
    anything else, permanent                 fails that delivery only (blocked, spam, policy,
                                             too large, relay, expired, other, no status)
    anything else, temporary (delayed)       nothing
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parseaddr

from sqlalchemy import Connection

from mailer.bounces.dsn import RecipientReport, Report
from mailer.core.addresses import clean_address
from mailer.core.config import Settings
from mailer.core.errors import AddressError
from mailer.core.states import SubscriberStatus
from mailer.core.tokens import token_subscriber_id, verify_token
from mailer.store import bounces as store

GONE = ("mailbox unknown", "domain unknown", "moved")
REPEATING = ("mailbox full",)
MAX_NAMED = 5  # recipients a report may name and still tie one of them by address alone


@dataclass(frozen=True)
class Rules:
    """The settings of the trust model (MAILER_BOUNCE_RECENT_DAYS, _REPEAT_COUNT, _DAYS)."""

    recent: timedelta = timedelta(days=30)
    repeat_count: int = 3
    repeat_within: timedelta = timedelta(days=14)
    verp: bool = False  # MAILER_BOUNCE_ADDRESS is set: every genuine bounce carries a token
    own_addresses: frozenset[str] = frozenset()  # address keys the list sends from


@dataclass(frozen=True)
class Tie:
    target: store.Target | None  # None: the report changes nobody
    by: str | None  # "verp", "message-id", "address"; None when not tied
    because: str = ""  # why not tied


@dataclass(frozen=True)
class Effect:
    fail_delivery: bool = False
    subscriber_status: SubscriberStatus | None = None


def rules_of(settings: Settings) -> Rules:
    """The trust model's settings; the list's own addresses are never a failed recipient."""
    return Rules(
        recent=timedelta(days=settings.bounce_recent_days),
        repeat_count=settings.bounce_repeat_count,
        repeat_within=timedelta(days=settings.bounce_repeat_days),
        verp=settings.bounce_address is not None,
        own_addresses=_keys((settings.sender, settings.bounce_address)),
    )


def _keys(addresses: tuple[str | None, ...] | set[str]) -> frozenset[str]:
    keys = {key_of(parseaddr(address)[1]) for address in addresses if address}
    return frozenset(key for key in keys if key is not None)


def list_keys(connection: Connection) -> frozenset[str]:
    """The address keys the list's campaigns were sent from."""
    return _keys(store.list_addresses(connection))


def tie(
    connection: Connection, token_key: bytes, report: Report, recipient: RecipientReport,
    rules: Rules, now: datetime,
) -> Tie:
    """The delivery this recipient's report is about, and by what it was tied (see above)."""
    sent = store.by_message_ids(connection, report.message_ids)
    if report.verp:
        by_token = _by_verp(connection, token_key, report.verp)
        if by_token is not None:
            if sent is not None and sent.subscriber_id == by_token.subscriber_id:
                return Tie(sent, "verp")
            return Tie(by_token, "verp")
    if sent is not None:
        return Tie(sent, "message-id")
    return _by_address(connection, report, recipient, rules, now)


def _by_address(
    connection: Connection, report: Report, recipient: RecipientReport, rules: Rules,
    now: datetime,
) -> Tie:
    if recipient.recipient is None:
        return Tie(None, None, "names no recipient, and no Message-ID or VERP token of ours")
    email_key = key_of(recipient.recipient)
    candidate = store.by_address(connection, email_key) if email_key is not None else None
    if candidate is None:
        return Tie(None, None, "no subscriber with this address" + (
            "; its VERP token does not verify" if report.verp else ""))
    refused = _refusal(report, recipient, rules, email_key)
    if refused:
        return Tie(None, None, refused)
    delivery = store.sent_since(connection, candidate.subscriber_id, now - rules.recent)
    if delivery is None:
        return Tie(None, None, f"address only, and nothing was sent to it in the last "
                   f"{rules.recent.days} days")
    return Tie(store.Target(candidate.subscriber_id, candidate.email_key, delivery), "address")


def _refusal(
    report: Report, recipient: RecipientReport, rules: Rules, email_key: str | None
) -> str:
    """Why an address alone does not tie this report, or ""."""
    named = len({r.recipient.casefold() for r in report.recipients if r.recipient})
    if named > MAX_NAMED:
        return f"address only, in a report naming {named} recipients"
    if recipient.source == "text":
        return "address only, guessed from the text (not a recipient field)"
    if email_key in rules.own_addresses:
        return "the list's own address"
    if report.verp is not None:
        return "its VERP token does not verify"
    if rules.verp:
        return "address only, and VERP is configured (a genuine bounce carries a token)"
    return ""


def effect(
    connection: Connection, report: Report, recipient: RecipientReport, tied: Tie,
    rules: Rules, now: datetime,
) -> Effect:
    """What a tied report changes: the allow-list above."""
    target = tied.target
    if target is None:
        return Effect()
    if report.kind == "complaint":
        return Effect(subscriber_status=SubscriberStatus.UNSUBSCRIBED)
    permanent = recipient.severity == "permanent"
    reason = recipient.reason
    if permanent and reason in GONE:
        return Effect(fail_delivery=True, subscriber_status=SubscriberStatus.BOUNCED)
    if reason in REPEATING or (not permanent and reason in GONE):
        earlier = store.repeats(connection, target.subscriber_id, REPEATING, GONE,
                                now - rules.repeat_within)
        repeated = earlier + 1 >= rules.repeat_count  # this report is not stored yet
        return Effect(fail_delivery=permanent,
                      subscriber_status=SubscriberStatus.BOUNCED if repeated else None)
    return Effect(fail_delivery=permanent)


def _by_verp(connection: Connection, token_key: bytes, token: str) -> store.Target | None:
    subscriber_id = token_subscriber_id(token)
    if subscriber_id is None:
        return None
    candidate = store.by_subscriber(connection, subscriber_id)
    if candidate is None or not verify_token(
        token_key, token, candidate.subscriber_id, candidate.email_key
    ):
        return None
    return candidate


def key_of(address: str) -> str | None:
    try:
        return clean_address(address)[0].key
    except AddressError:
        return None
