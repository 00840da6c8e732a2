"""The MTA families whose bounces are told apart: one module each, asked in a fixed order.

A family only names the `format` of a report: the plain-text reading itself is shared
(`plaintext`), since every family writes the same things (an address on its own line, the
remote server's reply, an enhanced status code) in nearly the same shapes. A delivery-status
report is labelled with its family's name only for the families whose DSNs are worth telling
apart (Gmail, Exchange); it is "rfc3464" otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailer.bounces.dsn.formats import exchange, exim, google, qmail

if TYPE_CHECKING:
    from mailer.bounces.dsn.evidence import Evidence


@dataclass(frozen=True)
class Family:
    name: str  # the Report's format
    wrote: Callable[[Evidence], bool]  # True when its marks are on the message
    names_dsn: bool  # a delivery-status report it wrote is labelled with its name


# First match wins, so the order is part of the reading: a message with both a Google sender
# and Exchange's headers is gmail.
FAMILIES = (
    Family("gmail", google.wrote, names_dsn=True),
    Family("exchange", exchange.wrote, names_dsn=True),
    Family("qmail", qmail.wrote, names_dsn=False),
    Family("exim", exim.wrote, names_dsn=False),
)


def identify(evidence: Evidence) -> Family | None:
    """Who wrote the bounce, when it shows; else None."""
    return next((family for family in FAMILIES if family.wrote(evidence)), None)
