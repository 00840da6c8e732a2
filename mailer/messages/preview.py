"""`mailer preview`: one subscriber's message as a reader sees it, and the factory it comes from.

A preview (and the pre-flight check) makes its messages with a Message-ID prefix derived from
the campaign and its templates; a send fixes each delivery's own Message-ID when it queues it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email import policy as email_policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser

from mailer.messages.campaign import Campaign
from mailer.messages.factory import MessageFactory, Outgoing


def preview_factory(campaign: Campaign, secret: bytes) -> MessageFactory:
    """The campaign's message factory for a preview or a pre-flight check."""
    nonce = hashlib.sha256(f"{campaign.name}\0{campaign.digest}".encode()).hexdigest()[:12]
    return MessageFactory(campaign, secret, nonce)


@dataclass(frozen=True)
class Preview:
    outgoing: Outgoing
    status: str  # the subscriber's status: only `active` ones are sent to

    @property
    def message(self) -> EmailMessage:
        """The wire bytes parsed back with the standard library (policy.default)."""
        parsed = BytesParser(policy=email_policy.default).parsebytes(self.outgoing.data)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def header(self, name: str) -> str | None:
        """A header as a reader sees it, decoded per RFC 2047 (email.header.decode_header).

        policy.default's address parser keeps the folding space between two adjacent
        encoded words of one display name, which RFC 2047 (6.2) says to drop; the older
        decoder drops it, so a long name reads exactly as it was written.
        """
        parsed = BytesParser(policy=email_policy.compat32).parsebytes(
            self.outgoing.data, headersonly=True
        )
        # The stored value, not get()'s: that one turns raw UTF-8 into U+FFFD replacements.
        raw = next((v for k, v in parsed.raw_items() if k.lower() == name.lower()), None)
        if raw is None:
            return None
        text = " ".join(str(raw).split())
        if not text.isascii():
            # A message for an SMTPUTF8 address carries its headers as raw UTF-8, which the
            # parser hands back as surrogate escapes: the text is those bytes, decoded.
            text = text.encode("ascii", "surrogateescape").decode("utf-8", "replace")
        try:
            return str(make_header(decode_header(text)))
        except (UnicodeError, LookupError):  # raw UTF-8 beside encoded words: as it is
            return text
