"""Keyed hashes and unsubscribe tokens: HMAC-SHA256, never the raw address.

A token names a subscriber by id and proves it with a MAC over the id and the address key,
so it cannot be forged, cannot be turned back into an address, and dies with the subscriber
(`forget`). The keyed hash of an erased address lets an import refuse it without keeping it.
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


def token_subscriber_id(token: str) -> int | None:
    """The subscriber id a well-formed token names (not yet verified), or None."""
    match = _TOKEN.match(token.strip())
    return int(match.group(1), 16) if match else None


def verify_token(secret: bytes, token: str, subscriber_id: int, email_key: str) -> bool:
    return hmac.compare_digest(token.strip(), make_token(secret, subscriber_id, email_key))


def verp_address(bounce_address: str, token: str) -> str:
    """`rebonds@asso.fr` + a token -> `rebonds+TOKEN@asso.fr`: the envelope sender that tells,
    when a bounce comes back to it, which subscriber the message was for (VERP)."""
    local, _, domain = bounce_address.rpartition("@")
    return f"{local}+{token}@{domain}"
