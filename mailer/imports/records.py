"""CSV records in, subscriber candidates and rejections out: the pure half of `mailer import`.

No SQL here: deduplication against the database and the counts of imported/updated/unchanged
are the store's job. Every record becomes exactly one of: a Candidate, or a Rejection with
its line number and reason; warnings never stop a row. Whatever is changed on the way (a
character removed, a name cut, missing cells) or will matter later (an address that needs
SMTPUTF8) is a warning: nothing is changed silently.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from mailer.core.addresses import NAME_MAX, clean_address, clean_name, split_full_name
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
_WIDTHS = {"first_name": NAME_MAX, "last_name": NAME_MAX, "civility": CIVILITY_MAX}
SMTPUTF8_NOTE = "address not ASCII before the @: only a relay offering SMTPUTF8 can deliver it"
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


def _clean_json(value: Any) -> tuple[Any, bool]:
    """A JSON value with every string in it, keys included, cleaned as a name is.

    A NUL would make PostgreSQL refuse the whole batch, and an escape sequence would reach
    a Subject header or a terminal; numbers, booleans and null are kept as they are.
    """
    if isinstance(value, str):
        text, removed = clean_name(value, None)
        return text or "", removed
    if isinstance(value, list):
        items = [_clean_json(item) for item in value]
        return [item for item, _ in items], any(removed for _, removed in items)
    if isinstance(value, dict):
        cleaned: dict[str, Any] = {}
        removed = False
        for key, item in value.items():
            clean_key, key_removed = _clean_json(key)
            cleaned[clean_key], item_removed = _clean_json(item)
            removed = removed or key_removed or item_removed
        return cleaned, removed
    return value, False


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # `1e400`: Python reads it as inf
        raise ValueError(f"{text} is out of range")
    return value


def _json_object(raw: str) -> tuple[dict[str, Any], bool] | None:
    """listmonk's attributes cell as a cleaned dict and whether cleaning removed anything,
    or None when it is not a JSON object.

    NaN, Infinity and numbers too large for a float are refused: PostgreSQL's json type
    would refuse them at insert time, and with them the whole batch.
    """
    try:
        parsed = json.loads(raw, parse_constant=_no_constants, parse_float=_finite)
        if not isinstance(parsed, dict):
            return None
        cleaned, removed = _clean_json(parsed)
    except (ValueError, RecursionError):
        return None
    return cleaned, removed


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
    if address.smtputf8:
        yield Notice(line, SMTPUTF8_NOTE)
    names: dict[str, str | None] = {}
    for name_field in ("first_name", "last_name", "name", "civility"):
        value, removed = clean_name(_cell(cells, fields.get(name_field)), None)
        if removed:
            yield Notice(line, f"control characters removed from {name_field}")
        names[name_field] = value
    if names["first_name"] is None and names["last_name"] is None and names["name"]:
        names["first_name"], names["last_name"] = split_full_name(names["name"])
    for name_field, width in _WIDTHS.items():
        value = names[name_field]
        if value is not None and len(value) > width:
            names[name_field] = value[:width].rstrip()
            yield Notice(line, f"{name_field} cut to {width} characters, the stored length")

    attributes: dict[str, Any] = {}
    for attribute, index in columns.attributes.items():
        value, removed = clean_name(_cell(cells, index), None)
        if removed:
            yield Notice(line, f"control characters removed from attribute {attribute!r}")
        if value:
            attributes[attribute] = value
    if columns.listmonk_attributes is not None:
        raw = _cell(cells, columns.listmonk_attributes).strip()
        if raw:
            parsed = _json_object(raw)
            if parsed is None:
                yield Notice(line, "attributes column is not a JSON object; kept as text")
                text, removed = clean_name(raw, None)
                parsed = ({"attributes": text} if text else {}), removed
            if parsed[1]:
                column = columns.header[columns.listmonk_attributes]
                yield Notice(line, f"control characters removed from attribute {column!r}")
            attributes.update(parsed[0])
    width = len(columns.header)
    # Trailing empty cells (`a@b.fr;Anne;;;`) are what spreadsheets write: no warning.
    if any(cell.strip() for cell in cells[width:]):
        yield Notice(line, f"{len(cells)} cells but the header has {width}; extra ignored")
    elif len(cells) < width:  # a lost delimiter shifts every later cell: say so
        count = f"{len(cells)} cell" + ("s" if len(cells) > 1 else "")
        yield Notice(line, f"{count} but the header has {width}; the missing read as empty")

    yield Candidate(
        line=line,
        email=address.email,
        key=address.key,
        address=address.address,
        smtputf8=address.smtputf8,
        first_name=names["first_name"],
        last_name=names["last_name"],
        civility=names["civility"],
        status=status,
        attributes=attributes,
    )
