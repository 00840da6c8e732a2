"""CSV records in, subscriber candidates and rejections out: the pure half of `mailer import`.

No SQL here: deduplication against the database and the counts of imported/updated/unchanged
are the store's job. Every record becomes exactly one of: a Candidate, or a Rejection with
its line number and reason; warnings never stop a row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mailer.addresses import AddressError, clean_address, clean_name, split_full_name
from mailer.csvsource import Record
from mailer.headers import ColumnMap, normalise
from mailer.states import SubscriberStatus

_STATUS_WORDS: dict[str, SubscriberStatus] = {}
for _status, _words in {
    SubscriberStatus.ACTIVE: (
        "",
        "active",
        "enabled",
        "subscribed",
        "confirmed",
        "actif",
        "active",
        "abonne",
        "abonnee",
        "inscrit",
        "inscrite",
        "oui",
        "yes",
        "1",
        "true",
        "optin",
        "valid",
    ),
    SubscriberStatus.UNSUBSCRIBED: (
        "unsubscribed",
        "blocklisted",
        "blacklisted",
        "disabled",
        "unconfirmed",
        "desabonne",
        "desabonnee",
        "desinscrit",
        "desinscrite",
        "optout",
        "non",
        "no",
        "0",
        "false",
        "inactive",
        "inactif",
        "inactive",
        "unsub",
        "pending",
    ),
    SubscriberStatus.BOUNCED: ("bounced", "cleaned", "rebond", "npai", "invalid", "hardbounce"),
}.items():
    for _word in _words:
        _STATUS_WORDS[_word] = _status


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


Outcome = Candidate | Rejection | Notice


def _status_of(word: str) -> SubscriberStatus | None:

    return _STATUS_WORDS.get(normalise(word))


def _cell(cells: list[str], index: int | None) -> str:
    if index is None or index >= len(cells):
        return ""
    return cells[index]


def parse_record(record: Record, columns: ColumnMap) -> Iterator[Outcome]:
    """Turn one record into notices and then exactly one Candidate or Rejection."""
    line, cells = record.line, record.cells
    if record.error is not None:
        yield Rejection(line, f"unreadable CSV record: {record.error}", cells)
        return
    fields = columns.fields
    if record.end_line > record.line and any(
        "\n" in cell and "@" in cell.split("\n", 1)[1] for cell in cells
    ):
        yield Rejection(
            line,
            f"unbalanced quote: lines {record.line}-{record.end_line} were read as one record",
            cells,
        )
        return
    try:
        address, address_notes = clean_address(_cell(cells, fields["email"]))
    except AddressError as exc:
        yield Rejection(line, str(exc), cells)
        return

    status_word = _cell(cells, fields.get("status"))
    status = _status_of(status_word)
    if status is None:
        yield Rejection(
            line,
            f"unknown status {status_word.strip()!r} (expected active, unsubscribed or bounced)",
            cells,
        )
        return
    if _cell(cells, columns.cleaned_marker).strip():
        status = SubscriberStatus.BOUNCED
    elif _cell(cells, columns.unsubscribed_marker).strip():
        status = SubscriberStatus.UNSUBSCRIBED

    for note in address_notes:
        yield Notice(line, note)
    names: dict[str, str | None] = {}
    for name_field in ("first_name", "last_name", "name", "civility"):
        value, removed = clean_name(_cell(cells, fields.get(name_field)))
        if removed:
            yield Notice(line, f"control characters removed from {name_field}")
        names[name_field] = value
    first, last = names["first_name"], names["last_name"]
    if first is None and last is None and names["name"]:
        first, last = split_full_name(names["name"])

    attributes: dict[str, Any] = {}
    for attribute, index in columns.attributes.items():
        value = _cell(cells, index).strip()
        if value:
            attributes[attribute] = value
    if columns.listmonk_attributes is not None:
        raw = _cell(cells, columns.listmonk_attributes).strip()
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                attributes.update(parsed)
            else:
                yield Notice(line, "attributes column is not a JSON object; kept as text")
                attributes["attributes"] = raw
    if len(cells) > len(columns.header):
        yield Notice(
            line, f"{len(cells)} cells but the header has {len(columns.header)}; extra ignored"
        )

    yield Candidate(
        line=line,
        email=address.email,
        key=address.key,
        address=address.address,
        smtputf8=address.smtputf8,
        first_name=first,
        last_name=last,
        civility=names["civility"],
        status=status,
        attributes=attributes,
    )
