"""qmail (and netqmail): its bounces say "This is the qmail-send program"."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailer.bounces.dsn.evidence import Evidence


def wrote(evidence: Evidence) -> bool:
    return "qmail-send program" in evidence.folded_text
