"""Physical lines of a CSV file, read with a bound: no line or record is ever held whole past it.

A file with a 200 MB line (a dump pasted into a cell, a binary file renamed .csv) would
otherwise be read into memory in one piece before the csv module could refuse its field.
Lines longer than the bound are skipped in chunks and stand as `None`; `RecordBound` turns
them, and records whose lines add up past the bound, into `Overflow` for the reader.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, TextIO

CHUNK = 64 * 1024


class Overflow(Exception):  # a signal between two iterators, never shown to anyone
    """The record being read grew past the bound; reading goes on at the next line."""


def byte_lines(handle: BinaryIO, limit: int) -> Iterator[bytes | None]:
    """Lines ending at LF, each at most `limit` bytes; None for a longer line, skipped."""
    while line := handle.readline(limit + 1):
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := handle.readline(CHUNK)) and not rest.endswith(b"\n"):
                pass  # the rest of the line, a chunk at a time, kept nowhere
            yield None
        else:
            yield line


def text_lines(handle: TextIO, limit: int, newline: str) -> Iterator[str | None]:
    """The same for a decoded text stream (UTF-16 and UTF-32 files), in characters."""
    while line := handle.readline(limit + 1):
        if len(line) > limit and not line.endswith(newline):
            while (rest := handle.readline(CHUNK)) and not rest.endswith(newline):
                pass
            yield None
        else:
            yield line


def cr_lines(handle: BinaryIO, limit: int) -> Iterator[bytes | None]:
    """Lines of an old Mac file (CR only), streamed, with the same bound."""
    pending = b""
    skipping = False  # inside a line already known to be too long
    while chunk := handle.read(CHUNK):
        pending += chunk
        *lines, pending = pending.split(b"\r")
        for line in lines:
            if skipping or len(line) > limit:
                skipping = False
                yield None
            else:
                yield line + b"\r"
        if len(pending) > limit:
            skipping, pending = True, b""
    if skipping or len(pending) > limit:
        yield None
    elif pending:
        yield pending


class RecordBound:
    """The lines csv.reader reads, counted, with the record bound.

    Raises Overflow for a line that was too long, or for the line that takes the current
    record past `limit` characters; csv.reader passes the exception on and starts afresh at
    the next call, so one runaway record costs its lines, never the rest of the file.
    `line` is the physical number of the last line handed out (csv's own count skips the
    lines that raised).
    """

    def __init__(self, lines: Iterator[str | None], limit: int) -> None:
        self._lines = lines
        self.limit = limit
        self.line = 0
        self._held = 0  # characters of the current record so far

    def __iter__(self) -> RecordBound:
        return self

    def __next__(self) -> str:
        text = next(self._lines)
        self.line += 1
        self._held += self.limit + 1 if text is None else len(text)
        if self._held > self.limit:
            self._held = 0
            raise Overflow
        assert text is not None
        return text

    def new_record(self) -> None:
        """The reader finished a record (or gave up on one): the count starts again."""
        self._held = 0
