"""One campaign's messages: subscriber in, finished message bytes out.

Ties together the campaign's compiled templates (`render`), the subscriber's unsubscribe token
(`tokens`) and the fast byte construction (`compose`). Pure: the caller brings the token
secret, the Message-ID and the date. Used by `mailer preview`, the pre-flight check and the
sending loop alike, so what is previewed and checked is what is sent.

Rendering goes through the campaign's `skeleton` when it has one: what is the same for every
subscriber is rendered and encoded once, only the holes per subscriber. It gives the same
parts and bytes as the plain way (Jinja2 on the whole template, the composer encoding the
bodies), which is used for any part the skeleton cannot make, for any subscriber it fails on
(so that the error is Jinja2's), and for everything when `fast=False`.
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
from mailer.messages.inheritance import Unsupported
from mailer.messages.reference import Envelope, build_message, message_id
from mailer.messages.render import Links, Parts, Renderer
from mailer.messages.skeleton import Rendered, Skeleton


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

    def __init__(self, campaign: Campaign, secret: bytes, nonce: str, *, fast: bool = True
                 ) -> None:
        self.campaign = campaign
        self.renderer = Renderer(campaign)
        self.composer = Composer(campaign)
        self._secret = secret
        self._nonce = nonce
        self.skeleton = _skeleton(self.renderer) if fast else None
        self.fallbacks = 0  # subscribers the skeleton left to the plain way

    def render(self, recipient: Recipient, links: Links) -> Rendered:
        """The parts (and the bodies, when the skeleton encoded them)."""
        if self.skeleton is not None:
            try:
                rendered = self.skeleton.render(recipient, links)
            except Exception:  # the plain way says what is wrong, in its words
                rendered = None
            if rendered is not None:
                return rendered
            self.fallbacks += 1
        return Rendered(self.renderer.render(recipient, links))

    def links(self, recipient: Recipient) -> Links:
        return Links.build(self.campaign, make_token(self._secret, recipient.id, recipient.key))

    def message_id(self, recipient: Recipient) -> str:
        return message_id(self._nonce, recipient.id, self.campaign.sender_domain)

    def make(
        self, recipient: Recipient, *, date: datetime, message_id: str | None = None
    ) -> Outgoing:
        """Render and compose; TemplateError or RecipientError names what went wrong."""
        links = self.links(recipient)
        rendered = self.render(recipient, links)
        envelope = Envelope(message_id or self.message_id(recipient), date)
        try:
            data = self.composer.compose(recipient, rendered.parts, links, envelope,
                                         bodies=rendered.bodies)
        except (ValueError, HeaderParseError) as exc:
            raise RecipientError(f"{recipient.email!r} cannot be put in a header: {exc}") from exc
        return Outgoing(recipient, rendered.parts, links, envelope, data)

    def email_message(self, outgoing: Outgoing) -> EmailMessage:
        """The same message as an EmailMessage (the reference construction)."""
        return build_message(
            self.campaign, outgoing.recipient, outgoing.parts, outgoing.links, outgoing.envelope
        )


def _skeleton(renderer: Renderer) -> Skeleton | None:
    """The campaign's skeleton if it is of use and agrees with the plain way on samples."""
    try:
        skeleton = Skeleton(renderer)
    except Unsupported:
        return None
    return skeleton if skeleton.useful and skeleton.check() else None
