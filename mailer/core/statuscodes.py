"""RFC 3463 enhanced status codes: reading one from a reply, and what a status says about
the recipient's mailbox. Shared by the sending policy (SMTP replies) and the bounce reader
(delivery reports); pure.
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


# A permanent bounce report (`mailer bounces import`) comes from the recipient's side, after
# the relay accepted the message: it marks the subscriber bounced unless its status says the
# failure was about the message or its sender rather than the mailbox. RFC 3463 classes:
# 5.3 mail system (message too big...), 5.5 protocol, 5.6 content, 5.7 security or policy
# (spam filters, DMARC, blocked sender); 5.1.7 and 5.1.8 name the sender's address; 5.2.2
# (mailbox full) and 5.2.3 (message too long for it) leave an address that works: the
# delivery failed, the subscriber stays (as a 552 at RCPT is only deferred when sending).
_ABOUT_MESSAGE = ("5.3.", "5.5.", "5.6.", "5.7.")
_ABOUT_SENDER = frozenset({"5.1.7", "5.1.8", "5.2.2", "5.2.3"})


def bounce_marks_subscriber(status: str | None) -> bool:
    """True when a permanent bounce with this status means the address no longer works.

    No status at all (a provider's plain-text notice) counts as the mailbox's failure: it is
    how the old formats report an unknown user.
    """
    if status is None:
        return True
    return not (status.startswith(_ABOUT_MESSAGE) or status in _ABOUT_SENDER)
