"""Reading a CSV export as people really have it: encoding, delimiter, line numbers.

Streams the file: memory does not grow with its size. Encodings: a byte-order mark wins
(UTF-8, UTF-16); otherwise each line is decoded as UTF-8 and, failing that, as Windows-1252
(what French Excel writes), so a file that mixes both still reads right. Delimiters `,` `;`
tab and `|` are detected from the first records. Every record carries the physical line
numbers it spans, so every message can name the line.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mailer.errors import InputError

SAMPLE_BYTES = 64 * 1024
DELIMITERS = (",", ";", "\t", "|")
FIELD_LIMIT = 128 * 1024  # a longer field is almost always an unbalanced quote
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True)
class Record:
    """One CSV record: its cells and the physical lines it spans (1-based)."""

    line: int
    end_line: int
    cells: list[str]
    error: str | None = None


@dataclass
class DecodeStats:
    utf8_lines: int = 0  # lines holding non-ASCII UTF-8
    cp1252_lines: int = 0
    first_cp1252_line: int | None = None
    replaced_lines: list[int] = field(default_factory=list)


def _decode_cp1252(raw: bytes) -> str:
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:  # 0x81 0x8D 0x8F 0x90 0x9D are unassigned in cp1252
        return raw.decode("latin-1")


def _looks_binary(sample: bytes) -> bool:
    workbook = sample.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0"))
    return workbook or sample.count(b"\x00") > max(1, len(sample) // 100)


def _split_cr(handle: BinaryIO) -> Iterator[bytes]:
    """Lines of an old Mac file (CR only), streamed."""
    pending = b""
    while chunk := handle.read(SAMPLE_BYTES):
        pending += chunk
        *lines, pending = pending.split(b"\r")
        for line in lines:
            yield line + b"\r"
    if pending:
        yield pending


def _normalise_encoding(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError as exc:
        raise InputError(f"unknown encoding {name!r}", hint="for example utf-8 or cp1252") from exc


class CsvSource:
    """A CSV file opened for streaming: `header`, then `records()`."""

    def __init__(self, path: Path, *, encoding: str | None = None, delimiter: str | None = None):
        self.path = path
        self.stats = DecodeStats()
        self.bytes_read = 0
        try:
            self._handle: BinaryIO = path.open("rb")
            self.size = path.stat().st_size
            sample = self._handle.read(SAMPLE_BYTES)
            self._handle.seek(0)
        except IsADirectoryError as exc:
            raise InputError(f"{path} is a folder, not a CSV file") from exc
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from exc
        self._forced = _normalise_encoding(encoding) if encoding else None
        self._wide: str | None = None
        self._skip = 0
        if self._forced is None:
            if sample.startswith(codecs.BOM_UTF8):
                self._skip = len(codecs.BOM_UTF8)
            for bom, name in _WIDE_BOMS:
                if sample.startswith(bom):
                    self._wide = name
                    break
        elif self._forced.startswith(("utf-16", "utf-32")):
            self._wide = self._forced
        elif self._forced == "utf-8" and sample.startswith(codecs.BOM_UTF8):
            self._skip = len(codecs.BOM_UTF8)
        if self._wide is None and _looks_binary(sample):
            self.close()
            raise InputError(
                f"{path} is not CSV text (a spreadsheet workbook?)",
                hint="in Excel or LibreOffice: File > Save As > CSV",
            )
        self._cr_only = b"\n" not in sample and b"\r" in sample
        if self._wide is not None:
            sample_text = sample.decode(self._wide, errors="ignore")
        else:
            sample_text = "".join(self._decoded(self._raw_lines(io.BytesIO(sample)), count=False))
        self.delimiter = self._check_delimiter(delimiter) if delimiter else detect(sample_text)
        self._records = self._parse()
        self.header: list[str] = []
        self.header_line = 0
        for record in self._records:
            if record.error is None and any(cell.strip() for cell in record.cells):
                self.header = [cell.strip().lstrip("\ufeff") for cell in record.cells]
                self.header_line = record.line
                break
        if not self.header:
            self.close()
            raise InputError(f"{path} is empty: no header row")

    @staticmethod
    def _check_delimiter(delimiter: str) -> str:
        named = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
        value = named.get(delimiter.lower(), delimiter)
        if len(value) != 1 or value in '"\r\n':
            raise InputError(f"invalid delimiter {delimiter!r}: give one character, or 'tab'")
        return value

    @property
    def encoding(self) -> str:
        """What the file turned out to be, for the summary."""
        if self._wide or self._forced:
            return self._wide or self._forced or ""
        if self.stats.cp1252_lines and self.stats.utf8_lines:
            return "mixed utf-8/windows-1252"
        if self.stats.cp1252_lines:
            return "windows-1252"
        return "utf-8-sig" if self._skip else "utf-8"

    def _raw_lines(self, handle: BinaryIO) -> Iterator[bytes]:
        if self._cr_only:
            return _split_cr(handle)
        return iter(handle)

    def _decoded(self, raw_lines: Iterator[bytes], *, count: bool = True) -> Iterator[str]:
        """Decoded lines; line numbers in `stats` are physical (1-based)."""
        forced = self._forced
        for number, raw in enumerate(raw_lines, start=1):
            if count:
                self.bytes_read += len(raw)
            if number == 1 and self._skip:
                raw = raw[self._skip :]
            if forced is not None:
                try:
                    yield raw.decode(forced)
                except UnicodeDecodeError:
                    if count:
                        self.stats.replaced_lines.append(number)
                    yield raw.decode(forced, errors="replace")
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                if count:
                    self.stats.cp1252_lines += 1
                    if self.stats.first_cp1252_line is None:
                        self.stats.first_cp1252_line = number
                yield _decode_cp1252(raw)
                continue
            if count and not raw.isascii():
                self.stats.utf8_lines += 1
            yield text

    def _lines(self) -> Iterator[str]:
        if self._wide is not None:
            text = io.TextIOWrapper(self._handle, encoding=self._wide, newline="")
            for line in text:
                self.bytes_read = self._handle.tell()
                yield line
            return
        yield from self._decoded(self._raw_lines(self._handle))

    def _parse(self) -> Iterator[Record]:
        csv.field_size_limit(FIELD_LIMIT)
        reader = csv.reader(self._lines(), delimiter=self.delimiter, strict=False)
        previous_end = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Record(previous_end + 1, reader.line_num, [], error=str(exc))
                previous_end = reader.line_num
                continue
            start, previous_end = previous_end + 1, reader.line_num
            if cells:
                yield Record(start, previous_end, cells)

    def records(self) -> Iterator[Record]:
        """The data records after the header, streamed; blank lines are skipped."""
        yield from self._records

    def progress(self) -> tuple[int, int]:
        """(bytes read, file size) for a progress bar."""
        return min(self.bytes_read, self.size), self.size

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> CsvSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def detect(sample_text: str, *, is_email_header: Callable[[str], bool] | None = None) -> str:
    """Pick the delimiter whose first records look most like a table.

    Scored on: a header cell that names an email column, then how many of the first
    records have the header's width, then the width itself.
    """
    from mailer.headers import is_email_header as default_check

    check = is_email_header or default_check
    # Drop a possibly cut last line: the sample ends mid-file.
    complete = sample_text.rsplit("\n", 1)[0] if sample_text.count("\n") > 1 else sample_text
    best: tuple[tuple[int, int, int], str] = ((-1, -1, -1), ",")
    for delimiter in DELIMITERS:
        reader = csv.reader(io.StringIO(complete), delimiter=delimiter, strict=False)
        try:
            rows = [row for _, row in zip(range(50), reader, strict=False) if row]
        except csv.Error:
            continue
        if not rows:
            continue
        width = len(rows[0])
        has_email = int(width > 1 and any(check(cell) for cell in rows[0]))
        consistent = sum(1 for row in rows[1:] if len(row) == width) if width > 1 else 0
        score = (has_email, consistent, width)
        if score > best[0]:
            best = (score, delimiter)
    return best[1]
