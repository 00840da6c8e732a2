"""CSV records in, subscriber candidates and rejections out: the pure half of `mailer import`.

No SQL here: deduplication against the database and the counts of imported/updated/unchanged
are the store's job. Every record becomes exactly one of: a Candidate, or a Rejection with
its line number and reason; warnings never stop a row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from mailer.core.addresses import clean_address, clean_name, split_full_name
from mailer.core.errors import AddressError
from mailer.core.people import Candidate, Notice, Rejection
from mailer.core.states import SubscriberStatus
from mailer.imports.columns import ColumnMap, normalise
from mailer.imports.csvsource import DELIMITERS, Record

_STATUS_WORDS: dict[str, SubscriberStatus] = {}
for _status, _words in {
    SubscriberStatus.ACTIVE: (
        "",
        "active",
        "enabled",
        "subscribed",
        "confirmed",
        "actif",
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
        "unsub",
        "pending",
        "optedout",
        # Mailchimp: archived left the audience, transactional never opted in to campaigns.
        "archived",
        "transactional",
        "complained",  # a spam complaint: never mail again
        "spam",
    ),
    SubscriberStatus.BOUNCED: (
        "bounced",
        "bounce",
        "cleaned",
        "rebond",
        "npai",
        "invalid",
        "hardbounce",
        "hardbounced",
    ),
}.items():
    for _word in _words:
        _STATUS_WORDS[_word] = _status


CIVILITY_MAX = 50  # the subscribers.civility column
# A piece of a line that is an address and nothing else (`judy@example.com`, `"judy@x.fr"`).
_LONE_ADDRESS = re.compile(r'\s*"?[^\s"@]+@[^\s"@]+"?\s*')


Outcome = Candidate | Rejection | Notice


def _status_of(word: str) -> SubscriberStatus | None:
    # Most cells are empty or already a plain word: skip normalising those.
    return _STATUS_WORDS.get(word) or _STATUS_WORDS.get(normalise(word))


def _cell(cells: list[str], index: int | None) -> str:
    if index is None or index >= len(cells):
        return ""
    return cells[index]


def _swallowed_rows(record: Record, columns: ColumnMap) -> bool:
    """Whether a quote left open made the parser read several rows as one record.

    Told from a legitimate multi-line cell (Mailchimp NOTES, an address block) by what the
    cell's later lines hold: something shaped like a row of this file, with an address alone
    in the email column's position. A note that merely mentions an address is not that.
    """
    if record.end_line <= record.line:
        return False
    position = columns.fields["email"]
    needed = min(len(columns.header), 2)
    for cell in record.cells:
        for line in cell.splitlines()[1:]:
            for delimiter in DELIMITERS:
                pieces = line.split(delimiter)
                if (
                    len(pieces) >= needed
                    and position < len(pieces)
                    and _LONE_ADDRESS.fullmatch(pieces[position])
                ):
                    return True
    return False


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(raw: str) -> dict[str, Any] | None:
    """listmonk's attributes cell as a dict, or None when it is not a JSON object.

    NaN and Infinity are refused: PostgreSQL's json type would refuse them at insert time.
    """
    try:
        parsed = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None


def parse_record(record: Record, columns: ColumnMap) -> Iterator[Outcome]:
    """Turn one record into notices and then exactly one Candidate or Rejection."""
    line, cells = record.line, record.cells
    if record.error is not None:
        yield Rejection(line, f"unreadable CSV record: {record.error}", cells)
        return
    fields = columns.fields
    if _swallowed_rows(record, columns):
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
        column = columns.header[fields["status"]]
        yield Rejection(
            line,
            f"unknown status {status_word.strip()!r} in column {column!r} (expected active, "
            f"unsubscribed or bounced; --map '{column}=ignore' if it means something else)",
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
        raw_name = _cell(cells, fields.get(name_field))
        if name_field == "civility":
            value, removed = clean_name(raw_name, CIVILITY_MAX)
        else:
            value, removed = clean_name(raw_name)
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
            parsed = _json_object(raw)
            if parsed is not None:
                attributes.update(parsed)
            else:
                yield Notice(line, "attributes column is not a JSON object; kept as text")
                attributes["attributes"] = raw
    # Trailing empty cells (`a@b.fr;Anne;;;`) are what spreadsheets write: no warning.
    if any(cell.strip() for cell in cells[len(columns.header) :]):
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
