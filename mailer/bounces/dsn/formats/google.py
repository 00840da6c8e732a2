"""Gmail and Google Workspace: a google.com sender, or googlemail.com as the reporting MTA."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailer.bounces.dsn.evidence import Evidence

_SENDER = re.compile(r"@(?:googlemail|google)\.com\b")


def wrote(evidence: Evidence) -> bool:
    if _SENDER.search(evidence.sender):
        return True
    reporting = " ".join(block.get("reporting-mta", "") for block in evidence.scan.ds).lower()
    return "googlemail.com" in reporting
