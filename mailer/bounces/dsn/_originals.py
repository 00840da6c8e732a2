"""What a bounce says of the message it returns: its Message-IDs, its addressees, the VERP token.

These are how the bounce is matched to a delivery, so they are read from every kind of message,
bounce or not; the most trusted Message-ID comes first.
"""

from __future__ import annotations

import re
from email.message import Message

from mailer.bounces.dsn._decoding import ADDR_ONLY, addresses, headers
from mailer.bounces.dsn._mime import Scan

MSGID_RE = re.compile(r"<[^<>\s]+>")
MSGID_LINE = re.compile(r"(?i)\bMessage-ID\s*:\s*(<[^<>\s]+>)")
# Candidates kept: a bounce returns one message, whose Message-ID comes first. A hostile one
# named 200,000 in References, and each was a database lookup (bounded cost, issue 13).
MAX_MESSAGE_IDS = 20
# VERP: LOCAL+TOKEN@domain where TOKEN has the shape of mailer's tokens (MAILER_BOUNCE_ADDRESS
# may have any local part), or anything after `bounces+`.
_VERP = re.compile(
    r"(?i)(?<![\w.+-])(?:[\w.-]+\+([0-9a-f]{1,16}\.[A-Za-z0-9_-]{22})"
    r"|bounces\+([^@\s<>\"',;()]+))@[\w-]+(?:\.[\w-]+)+"
)


def _msgids(value: str) -> list[str]:
    found = MSGID_RE.findall(value)
    if not found and ADDR_ONLY.match(value.strip()):
        found = [f"<{value.strip()}>"]
    return found


def message_ids(msg: Message, scan: Scan, own: set[str]) -> tuple[str, ...]:
    """Message-IDs of the returned original, most trusted first, none of the bounce's `own`."""
    candidates: list[str] = []
    for original in scan.originals + scan.inline:
        for value in headers(original, "Message-ID")[:1]:
            candidates += _msgids(value)[:1]
    for block in scan.ds:
        candidates += _msgids(block.get("x-original-message-id", ""))[:1]
    for block in scan.mdn_fields:
        candidates += _msgids(block.get("original-message-id", ""))[:1]
    for value in headers(msg, "In-Reply-To"):
        candidates += _msgids(value)[:MAX_MESSAGE_IDS]
    for value in headers(msg, "References"):  # the latest last: the one replied to
        candidates += reversed(_msgids(value)[-MAX_MESSAGE_IDS:])
    for text in scan.all_text:
        candidates += MSGID_LINE.findall(text)[:MAX_MESSAGE_IDS]
    unique = [candidate for candidate in dict.fromkeys(candidates) if candidate not in own]
    return tuple(unique[:MAX_MESSAGE_IDS])


def original_recipients(scan: Scan) -> tuple[str, ...]:
    found: list[str] = []
    for original in scan.originals + scan.inline:
        for address in addresses(headers(original, "To")):
            if address not in found:
                found.append(address)
    return tuple(found)


def verp(msg: Message) -> str | None:
    """TOKEN of LOCAL+TOKEN@domain in the bounce's own envelope or address headers."""
    for name in ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "X-Delivered-To",
                 "To", "Cc", "Return-Path"):
        for value in headers(msg, name):
            match = _VERP.search(value)
            if match:
                return match.group(1) or match.group(2)
    return None
