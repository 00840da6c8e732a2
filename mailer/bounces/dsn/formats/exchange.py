"""Microsoft Exchange and Office 365: their own headers, sender, DSN fields or phrasing."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mailer.bounces.dsn._decoding import fold, header

if TYPE_CHECKING:
    from mailer.bounces.dsn.evidence import Evidence

# Exchange's NDR wording and its resolver status names ("RESOLVER.ADR.RecipNotFound"): the
# only mark left when a relay has rewritten the headers.
_WORDING = re.compile(
    r"resolver\.(?:adr|rst)\.|diagnostic information for administrators"
    r"|did not reach (?:some or all of )?the (?:following|intended) recipient"
    r"|following recipient\(s\) cannot be reached"
)


def wrote(evidence: Evidence) -> bool:
    msg = evidence.msg
    names = [name.lower() for name in msg]
    return bool(
        any(n.startswith("x-ms-exchange") or n == "x-ms-embedded-report" for n in names)
        or "microsoft exchange" in fold(header(msg, "X-MimeOLE"))
        or "microsoftexchange" in evidence.sender
        or any("x-display-name" in block for block in evidence.scan.ds)
        or _WORDING.search(evidence.folded_text)
    )
