"""The message, built the straightforward way: `email.message.EmailMessage` and its policy.

This is the reference. Every header goes through the standard library's header registry
(RFC 2047 encoded words, folding, address quoting); nothing is string-built, and a CR or LF
in a header value is refused by the library itself. `mailer.messages.compose` produces the
same bytes faster and is tested against this module.

Choices, each for the receiving side:
- lines at most 76 characters (RFC 2045's limit for quoted-printable; headers fold there too);
- both parts UTF-8 and quoted-printable: readable, 7-bit clean, any relay takes them;
- the multipart boundary starts with `=_`, which quoted-printable text can never contain, so
  it is fixed per campaign instead of searched per message;
- a subscriber whose address needs SMTPUTF8 gets a message in `policy.SMTPUTF8` (raw UTF-8
  headers, RFC 6532): an encoded word is never allowed inside an address.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from email import policy as email_policy
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import EmailPolicy
from typing import Any, cast

from mailer.core.people import Recipient
from mailer.messages.campaign import Campaign
from mailer.messages.render import Links, Parts

MAX_LINE = 76
HARD_LIMIT = 998  # RFC 5322: no line may be longer, whatever the folding


class UriListHeader(UnstructuredHeader):
    """`List-Unsubscribe: <https://…>, <mailto:…>`: URIs in angle brackets, never encoded.

    The library folds an unstructured header at white space, and turns any word too long for
    a line into an encoded word, which would break the URI for every mail client. A header
    whose URIs do not each fit on a line is folded with the RFC 5322 hard limit instead: the
    long URI stays whole on its line.
    """

    def fold(self, *, policy: Any) -> str:
        if any(len(word) + 1 > policy.max_line_length for word in str(self).split()):
            policy = policy.clone(max_line_length=HARD_LIMIT)
        folded: str = cast(Any, super()).fold(policy=policy)
        return folded


def _registry() -> HeaderRegistry:
    registry = HeaderRegistry()
    registry.map_to_type("list-unsubscribe", cast(type[BaseHeader], UriListHeader))
    return registry


POLICY: EmailPolicy[EmailMessage] = email_policy.SMTP.clone(
    max_line_length=MAX_LINE, header_factory=_registry()
)
UTF8_POLICY: EmailPolicy[EmailMessage] = POLICY.clone(utf8=True)
ONE_CLICK = "List-Unsubscribe=One-Click"


def mailbox(display_name: str, address: str) -> Address:
    """`Name <local@domain>`; from the parts, so a UTF-8 local part (RFC 6532) is accepted."""
    local, at, domain = address.rpartition("@")
    if not at:
        raise ValueError(f"not an address: {address!r}")
    return Address(display_name=display_name, username=local, domain=domain)


def policy_for(recipient: Recipient) -> EmailPolicy[EmailMessage]:
    return UTF8_POLICY if recipient.smtputf8 else POLICY


def boundary_for(campaign: Campaign) -> str:
    """Fixed per campaign: `=_` can never occur in a quoted-printable body (`=` is `=3D`)."""
    return "=_mailer_" + hashlib.sha256(f"{campaign.name}\0{campaign.digest}".encode()).hexdigest(
    )[:24]


def message_id(nonce: str, recipient_id: int, domain: str, mac: str = "") -> str:
    """`<nonce.id.MAC@domain>`: unique per campaign and subscriber, the same on every retry.

    A delivery's id is fixed when it is queued, with the MAC of `mailer.core.tokens.message_mac`
    so that it cannot be guessed from another subscriber's copy; ids made without one (previews,
    test sends, deliveries queued before the MAC) keep the old `<nonce.id@domain>` shape.
    """
    local = f"{nonce}.{recipient_id}.{mac}" if mac else f"{nonce}.{recipient_id}"
    return f"<{local}@{domain}>"


@dataclass(frozen=True)
class Envelope:
    """What differs per delivery besides the rendered parts."""

    message_id: str
    date: datetime


def build_message(
    campaign: Campaign, recipient: Recipient, parts: Parts, links: Links, envelope: Envelope
) -> EmailMessage:
    """The message as `EmailMessage` builds it; `.as_bytes()` gives the wire form."""
    message = EmailMessage(policy=policy_for(recipient))
    message["From"] = campaign.sender
    message["To"] = mailbox(recipient.display_name, recipient.address)
    if campaign.reply_to is not None:
        message["Reply-To"] = campaign.reply_to
    message["Subject"] = parts.subject
    message["Date"] = envelope.date
    message["Message-ID"] = envelope.message_id
    if campaign.list_id is not None:
        message["List-Id"] = campaign.list_id
    unsubscribe = links.header_value()
    if unsubscribe is not None:
        message["List-Unsubscribe"] = unsubscribe
        if links.url is not None:
            message["List-Unsubscribe-Post"] = ONE_CLICK
    message.set_content(parts.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if parts.html is not None:
        message.add_alternative(parts.html, subtype="html", charset="utf-8",
                                cte="quoted-printable")
        message.set_boundary(boundary_for(campaign))
    return message
