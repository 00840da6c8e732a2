"""IMAP's wire syntax, no I/O: quoted strings, folder names, UID sets, and imaplib's answers.

imaplib sends most arguments as they are and hands replies back as raw bytes and tuples; what
it leaves undone is done here, as pure functions the client in `imap` calls.
"""

from __future__ import annotations

import re
from array import array
from base64 import b64encode
from collections.abc import Iterable, Iterator

_LIST_SEPARATOR = re.compile(rb'^\([^)]*\) ("(?:\\.|[^"\\])*"|NIL)')
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_NUMBER = re.compile(rb"\d+")


def quoted(text: str) -> str:
    """An IMAP quoted string (imaplib sends most arguments as they are)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_folder_name(name: str) -> str:
    """A folder name in IMAP's modified UTF-7 (RFC 3501 5.1.3): "Été" → "&AMk-t&AOk-"."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = b64encode("".join(pending).encode("utf-16-be")).decode("ascii")
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if " " <= char <= "~":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def hierarchy_separator(first: object) -> str | None:
    """The server's separator between folder levels, from the first line of `LIST "" ""`;
    None when it has none, or it is "/" already."""
    found = _LIST_SEPARATOR.search(first) if isinstance(first, bytes) else None
    if found and found.group(1) not in (b"NIL", b'"/"'):
        return found.group(1)[1:-1].replace(b"\\\\", b"\\").decode("ascii")
    return None


def uid_sizes(lines: Iterable[object]) -> list[tuple[int, int]]:
    """(UID, size) of each message, in UID order, from a `UID FETCH (UID RFC822.SIZE)` answer."""
    messages: list[tuple[int, int]] = []
    for line in lines:
        head = line[0] if isinstance(line, tuple) else line
        if not isinstance(head, bytes):
            continue
        uid, size = _UID.search(head), _SIZE.search(head)
        if uid and size:
            messages.append((int(uid.group(1)), int(size.group(1))))
    return sorted(messages)


def number(value: object) -> int | None:
    """The number imaplib hands over as bytes (b"1732"), or None."""
    return int(value) if isinstance(value, bytes) and value.isdigit() else None


def uids_above(lines: Iterable[object], after: int) -> array[int]:
    """The UIDs of a `UID SEARCH` answer above `after`, ascending. "N:*" always names the
    folder's last message, even below N (RFC 3501 6.4.8): it is dropped here."""
    found: array[int] = array("Q")
    for line in lines:
        if isinstance(line, bytes):
            found.extend(uid for m in _NUMBER.finditer(line) if (uid := int(m.group())) > after)
    if any(found[i] > found[i + 1] for i in range(len(found) - 1)):
        found = array("Q", sorted(found))
    return found


def batches(
    messages: Iterable[tuple[int, int]], count: int, size_limit: int
) -> Iterator[list[int]]:
    """UIDs by batches of at most `count` messages and `size_limit` bytes (a bigger one alone)."""
    batch: list[int] = []
    size = 0
    for uid, message_size in messages:
        if batch and (len(batch) >= count or size + message_size > size_limit):
            yield batch
            batch, size = [], 0
        batch.append(uid)
        size += message_size
    if batch:
        yield batch


def uid_set(uids: Iterable[int]) -> str:
    """An IMAP sequence set for ascending UIDs: [1, 2, 3, 7, 9, 10] → "1:3,7,9:10"."""
    runs: list[list[int]] = []
    for uid in uids:
        if runs and uid == runs[-1][1] + 1:
            runs[-1][1] = uid
        else:
            runs.append([uid, uid])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in runs)


def fetched_bodies(data: Iterable[object]) -> dict[int, bytes]:
    """UID → message, from imaplib's UID FETCH answer (the UID before or after the body)."""
    bodies: dict[int, bytes] = {}
    waiting: bytes | None = None  # a body whose UID comes after it
    for part in data:
        if isinstance(part, tuple) and len(part) == 2:
            head, literal = part
            found = _UID.search(head) if isinstance(head, bytes) else None
            if found and isinstance(literal, bytes):
                bodies[int(found.group(1))] = literal
                waiting = None
            else:
                waiting = literal if isinstance(literal, bytes) else None
        elif isinstance(part, bytes) and waiting is not None:
            found = _UID.search(part)
            if found:
                bodies[int(found.group(1))] = waiting
            waiting = None
    return bodies
