"""Subscribers as the stages pass them on: an import's `Candidate`, `Rejection` and `Notice`,
and the renderer's `Recipient`, with the header-text rules a name obeys.

Pure values: the store merges Candidates and reads Recipients without importing the CSV
reader or the renderer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mailer.core.addresses import clean_name
from mailer.core.states import SubscriberStatus

_SPACES = re.compile(r"\s+")
# An RFC 2047 encoded word, as the standard library's header parser looks for one
# (email._header_value_parser.rfc2047_matcher). Before Python 3.11.10 the library decodes
# such a word found in a value it is given and writes the decoded text back out: a CR LF
# hidden in it becomes a real header (CPython gh-121650, CVE-2024-6923). Text that reaches
# a header is defused first, whatever the Python version.
_ENCODED_WORD = re.compile(r"=\?[^?]*\?[qQbB]\?.*?\?=")
# Characters that give a display name structure (quoted strings, addresses, lists): a name
# never needs them, and without them a name cannot be read as more addresses.
_NAME_STRUCTURE = str.maketrans(dict.fromkeys('<>@,;:"\\', " "))


def defuse_encoded_words(text: str) -> str:
    """`=?utf-8?q?…?=` written by someone becomes `= ?utf-8?q?…?=`: text, never decoded."""
    while (match := _ENCODED_WORD.search(text)) is not None:
        text = f"{text[: match.start()]}= ?{text[match.start() + 2 :]}"
    return text


def header_text(text: str) -> str:
    """One line of header text: white space collapsed (no CR or LF), encoded words defused."""
    return defuse_encoded_words(_SPACES.sub(" ", text).strip())


@dataclass(frozen=True)
class Recipient:
    """One subscriber as the renderer sees them."""

    id: int
    email: str  # as written, for display
    address: str  # on the wire: A-label domain
    key: str = ""  # the dedupe key the unsubscribe token is computed over
    smtputf8: bool = False
    first_name: str | None = None
    last_name: str | None = None
    civility: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Any) -> Recipient:
        return cls(
            id=row.id,
            email=row.email,
            address=row.address,
            key=row.email_key,
            smtputf8=bool(row.smtputf8),
            first_name=row.first_name,
            last_name=row.last_name,
            civility=row.civility,
            attributes=row.attributes or {},
        )

    @property
    def display_name(self) -> str:
        """`First Last` for the To header: no control or bidi characters, no `<>@,;:"\\`,
        no encoded word; only ever a name."""
        joined = " ".join(part for part in (self.first_name, self.last_name) if part)
        cleaned = clean_name(joined)[0] or ""
        return header_text(cleaned.replace("=?", "= ?").translate(_NAME_STRUCTURE))


@dataclass(frozen=True)
class Candidate:
    """A valid row, ready to be merged into the subscribers table."""

    line: int
    email: str
    key: str
    address: str
    smtputf8: bool
    first_name: str | None
    last_name: str | None
    civility: str | None
    status: SubscriberStatus
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Rejection:
    line: int
    reason: str
    cells: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Notice:
    """A warning about one line; the row itself was still used."""

    line: int
    message: str
