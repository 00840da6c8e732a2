"""RFC 3463 enhanced status codes: reading one from a reply, and what a status says about
the recipient's mailbox, for the sending policy (SMTP replies); pure. What a bounce report's
status means is `mailer.bounces.dsn.reasons`'.
"""

from __future__ import annotations

import re

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
# RFC 3463 statuses that say the recipient's address does not exist: the subscriber is marked
# bounced. Not the rest of 5.1.x: 5.1.0, 5.1.7 and 5.1.8 are about the sender.
BAD_MAILBOX = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"})


def enhanced_status(text: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of a reply text (`5.1.1`), if any."""
    match = _ENHANCED.match(text)
    return ".".join(match.groups()) if match else None
