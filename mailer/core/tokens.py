"""Keyed hashes, unsubscribe tokens and Message-ID MACs: HMAC-SHA256, never the raw address.

A token names a subscriber by id and proves it with a MAC over the id and the address key,
so it cannot be forged, cannot be turned back into an address, and dies with the subscriber
(`forget`). The keyed hash of an erased address lets an import refuse it without keeping it.
A delivery's Message-ID carries a MAC of the campaign's nonce and the subscriber id, so one
received copy does not predict the Message-ID of any other (a forged bounce quoting a guessed
id matches nothing).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

_TOKEN = re.compile(r"^([0-9a-f]{1,16})\.([A-Za-z0-9_-]{22})$")


def keyed_hash(key: bytes, email_key: str) -> str:
    """Hex HMAC-SHA256 of a normalised address."""
    return hmac.digest(key, email_key.encode("utf-8"), "sha256").hex()


def _mac(secret: bytes, subscriber_id: int, email_key: str) -> str:
    digest = hmac.new(
        secret, f"unsubscribe:{subscriber_id}:{email_key}".encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode("ascii").rstrip("=")


def make_token(secret: bytes, subscriber_id: int, email_key: str) -> str:
    """A URL-safe token such as `2a.Q1w2...` for one subscriber."""
    return f"{subscriber_id:x}.{_mac(secret, subscriber_id, email_key)}"


_MAX_ID = 2**63 - 1  # ids are signed 64-bit in both databases; past it, no one (not an error)


def token_subscriber_id(token: str) -> int | None:
    """The subscriber id a well-formed token names (not yet verified), or None."""
    match = _TOKEN.match(token.strip())
    subscriber_id = int(match.group(1), 16) if match else None
    return subscriber_id if subscriber_id is not None and subscriber_id <= _MAX_ID else None


def verify_token(secret: bytes, token: str, subscriber_id: int, email_key: str) -> bool:
    return hmac.compare_digest(token.strip(), make_token(secret, subscriber_id, email_key))


def verp_address(bounce_address: str, token: str) -> str:
    """`rebonds@asso.fr` + a token -> `rebonds+TOKEN@asso.fr`: the envelope sender that tells,
    when a bounce comes back to it, which subscriber the message was for (VERP)."""
    local, _, domain = bounce_address.rpartition("@")
    return f"{local}+{token}@{domain}"


MESSAGE_MAC_LENGTH = 20  # hex digits (80 bits) of the MAC in a Message-ID


def message_mac_prefix(nonce: str) -> str:
    """A Message-ID's MAC is over this and the subscriber id (the SQL in `mailer.store` too)."""
    return f"message-id:{nonce}."


def message_mac(key: bytes, nonce: str, subscriber_id: int) -> str:
    """The MAC a delivery's Message-ID carries: `<nonce.subscriber-id.MAC@domain>`."""
    text = f"{message_mac_prefix(nonce)}{subscriber_id}".encode()
    return hmac.digest(key, text, "sha256").hex()[:MESSAGE_MAC_LENGTH]
