"""Exim: its bounces say "This message was created automatically by mail delivery software"."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailer.bounces.dsn.evidence import Evidence


def wrote(evidence: Evidence) -> bool:
    return "created automatically by mail delivery software" in evidence.folded_text
