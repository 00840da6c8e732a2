"""One campaign's messages: subscriber in, finished message bytes out.

Ties together the campaign's compiled templates (`render`), the subscriber's unsubscribe token
(`tokens`) and the fast byte construction (`compose`). Pure: the caller brings the token
secret, the Message-ID and the date. Used by `mailer preview`, the pre-flight check and the
sending loop alike, so what is previewed and checked is what is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.errors import HeaderParseError
from email.message import EmailMessage

from mailer.core.errors import RecipientError
from mailer.core.people import Recipient
from mailer.core.tokens import make_token
from mailer.messages.campaign import Campaign
from mailer.messages.compose import Composer
from mailer.messages.reference import Envelope, build_message, message_id
from mailer.messages.render import Links, Parts, Renderer


@dataclass(frozen=True)
class Outgoing:
    """One finished message and what it was made from."""

    recipient: Recipient
    parts: Parts
    links: Links
    envelope: Envelope
    data: bytes

    @property
    def smtputf8(self) -> bool:
        """The address has a non-ASCII local part: only a relay offering SMTPUTF8 can take it."""
        return self.recipient.smtputf8


class MessageFactory:
    """Compile a campaign once; make each subscriber's message."""

    def __init__(self, campaign: Campaign, secret: bytes, nonce: str) -> None:
        self.campaign = campaign
        self.renderer = Renderer(campaign)
        self.composer = Composer(campaign)
        self._secret = secret
        self._nonce = nonce

    def links(self, recipient: Recipient) -> Links:
        return Links.build(self.campaign, make_token(self._secret, recipient.id, recipient.key))

    def message_id(self, recipient: Recipient) -> str:
        return message_id(self._nonce, recipient.id, self.campaign.sender_domain)

    def make(
        self, recipient: Recipient, *, date: datetime, message_id: str | None = None
    ) -> Outgoing:
        """Render and compose; TemplateError or RecipientError names what went wrong."""
        links = self.links(recipient)
        parts = self.renderer.render(recipient, links)
        envelope = Envelope(message_id or self.message_id(recipient), date)
        try:
            data = self.composer.compose(recipient, parts, links, envelope)
        except (ValueError, HeaderParseError) as exc:
            raise RecipientError(f"{recipient.email!r} cannot be put in a header: {exc}") from exc
        return Outgoing(recipient, parts, links, envelope, data)

    def email_message(self, outgoing: Outgoing) -> EmailMessage:
        """The same message as an EmailMessage (the reference construction)."""
        return build_message(
            self.campaign, outgoing.recipient, outgoing.parts, outgoing.links, outgoing.envelope
        )
