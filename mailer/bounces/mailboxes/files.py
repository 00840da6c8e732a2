"""Mailboxes on disk: an mbox file or a Maildir folder, only read, one message at a time.

Both are read in one pass that keeps nothing of the messages already given, so memory does
not grow with the mailbox: an mbox is split on its "From " lines by hand (the stdlib's
mailbox.mbox first builds a table of every message's offsets), a Maildir's folders are
listed as they are read (os.scandir). A message larger than `limit` bytes is not kept: it
comes as a MailItem without its bytes. Every OSError becomes an InputError naming the path.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mailer.bounces.mailboxes.stream import SOURCE_HINT, Mailbox, MailItem
from mailer.core.errors import InputError

_CHUNK = 1 << 20  # bytes read at once
_SEPARATOR = b"\nFrom "  # a message begins at every line that begins with "From "


def open_path(path: Path, limit: int) -> Iterator[Mailbox]:
    """The mbox or Maildir at `path`, open for the time of one iteration of the generator."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: no such file or folder", hint=SOURCE_HINT) from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {_reason(exc)}") from exc
    if stat.S_ISDIR(mode):
        yield _maildir(path, limit)
    elif stat.S_ISREG(mode):
        yield from _mbox(path, limit)
    else:
        raise InputError(f"{path} is neither an mbox file nor a Maildir folder", hint=SOURCE_HINT)


def _reason(exc: OSError) -> str:
    """`permission denied`, `is a directory`: the reason, in a few words."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if exc.strerror:
        return exc.strerror.lower()
    return str(exc).strip() or type(exc).__name__


# -- mbox ---------------------------------------------------------------------------------
# The messages are the bytes the stdlib's mailbox.mbox gives (`get_bytes`): what lies between
# a "From " line and the next, less the empty line that ends it. A body line quoted as ">From "
# stays as it is: in the common mboxo format the quoting cannot be undone without ambiguity.


def _mbox(path: Path, limit: int) -> Iterator[Mailbox]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {_reason(exc)}") from exc
    with handle:
        try:
            first = handle.read(5)
            if first and first != b"From ":
                raise InputError(
                    f'{path} is not an mbox: it does not begin with a "From " line',
                    hint=SOURCE_HINT,
                )
            total = _count(handle)
        except OSError as exc:
            raise InputError(f"cannot read {path}: {_reason(exc)}") from exc
        yield Mailbox(f"mbox {path}", total, lambda: _mbox_items(handle, path, limit))


def _count(handle: BinaryIO) -> int:
    """How many messages: the "From " lines, counted in a pass that keeps nothing."""
    handle.seek(0)
    count = 0
    tail = b"\n"  # the file's first byte begins a line
    while block := handle.read(_CHUNK):
        data = tail + block
        count += data.count(_SEPARATOR)
        tail = data[-5:]  # a separator may begin there and end in the next block
    return count


def _mbox_items(handle: BinaryIO, path: Path, limit: int) -> Iterator[MailItem]:
    try:
        handle.seek(0)
        for number, (raw, size) in enumerate(_split(handle, limit), start=1):
            yield MailItem(f"message {number}", raw, size)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {_reason(exc)}") from exc


class _Message:
    """One message of an mbox as its pieces come: kept up to the limit, measured always."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.tail = b""  # its last two bytes

    def add(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        self.tail = (self.tail + data[-2:])[-2:]
        if self.size <= self.limit + 1:  # + the empty line that may end it
            self.parts.append(data)
        else:
            self.parts.clear()

    def done(self) -> tuple[bytes, int]:
        """(the message, its size); b"" when it is over the limit."""
        ends_empty = self.tail == b"\n\n" or (self.size == 1 and self.tail == b"\n")
        size = self.size - ends_empty  # the empty line before the next "From " is the mbox's
        if size > self.limit:
            return b"", size
        raw = b"".join(self.parts)
        return (raw[:-1] if ends_empty else raw), size


def _split(handle: BinaryIO, limit: int) -> Iterator[tuple[bytes, int]]:
    """Each message of an mbox that begins with a "From " line, and its size, in one pass:
    memory holds one message (at most `limit` bytes) and a block of the file."""
    buffer = handle.read(_CHUNK)
    start = 0  # where a "From " line begins
    while buffer:
        end = buffer.find(b"\n", start)
        while end < 0:  # the "From " line goes on in the next block; it is not kept
            buffer, start = handle.read(_CHUNK), 0
            if not buffer:
                yield b"", 0  # the file ends in the "From " line
                return
            end = buffer.find(b"\n")
        message = _Message(limit)
        position = end + 1  # the message begins here; buffer[position - 1] is its "\n"
        while True:
            found = buffer.find(_SEPARATOR, position - 1)
            if found >= 0:
                message.add(buffer[position : found + 1])
                yield message.done()
                start = found + 1
                break
            more = handle.read(_CHUNK)
            if not more:
                message.add(buffer[position:])
                yield message.done()
                return
            # The last 5 bytes may begin a separator: they go with the next block, after
            # the byte before them (a separator's "\n" may be that byte).
            cut = max(position, len(buffer) - 5)
            message.add(buffer[position:cut])
            buffer, position = buffer[cut - 1 :] + more, 1


# -- Maildir ------------------------------------------------------------------------------
# Read by hand rather than with mailbox.Maildir, which does not tell a message's file name
# (the key the user's report shows), lists every name first and would read the folders again
# after two seconds. new/ is read before cur/: a message another client reads meanwhile moves
# from new/ to cur/, where it is found next (it may then come twice, never not at all). A
# file renamed within cur/ while it is listed may be missed by this run: the next one reads it.


def _maildir(path: Path, limit: int) -> Mailbox:
    if not ((path / "cur").is_dir() and (path / "new").is_dir()):
        raise InputError(
            f"{path} is a folder but not a Maildir: it has no cur/ and new/ sub-folders",
            hint=SOURCE_HINT,
        )
    total = sum(1 for folder in ("new", "cur") for _ in _maildir_files(path / folder))
    return Mailbox(f"Maildir {path}", total, lambda: _maildir_items(path, limit))


def _maildir_files(folder: Path) -> Iterator[str]:
    """The message files of new/ or cur/, in the order of the folder (nothing kept)."""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not entry.name.startswith(".") and entry.is_file():
                    yield entry.name
    except OSError as exc:
        raise InputError(f"cannot read {folder}: {_reason(exc)}") from exc


def _maildir_items(path: Path, limit: int) -> Iterator[MailItem]:
    for folder in ("new", "cur"):
        for name in _maildir_files(path / folder):
            item = _read_maildir_file(path, f"{folder}/{name}", limit)
            if item is not None:  # else moved to cur/ (read there) or deleted since listed
                yield item


def _read_maildir_file(path: Path, key: str, limit: int) -> MailItem | None:
    try:
        with open(path / key, "rb") as handle:
            raw = handle.read(limit + 1)
            if len(raw) > limit:
                return MailItem(key, b"", max(limit + 1, os.fstat(handle.fileno()).st_size))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read {path / key}: {_reason(exc)}") from exc
    return MailItem(key, raw)
