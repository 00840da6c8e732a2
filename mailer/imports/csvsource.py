"""Reading a CSV export as people really have it: encoding, delimiter, line numbers.

Streams the file: memory does not grow with its size. Encodings: a byte-order mark wins
(UTF-8, UTF-16); otherwise each line is decoded as UTF-8 and, failing that, as Windows-1252
(what French Excel writes), so a file that mixes both still reads right. Delimiters `,` `;`
tab and `|` are detected from the first records. Every record carries the physical line
numbers it spans, so every message can name the line. A cell is bounded (FIELD_LIMIT) and
so is a record (RECORD_LIMIT, see `lines`): past either, the record is an error on its line.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mailer.core.addresses import clean_name
from mailer.core.errors import InputError
from mailer.imports.lines import Overflow, RecordBound, byte_lines, cr_lines, text_lines

SAMPLE_BYTES = 64 * 1024
DELIMITERS = (",", ";", "\t", "|")
FIELD_LIMIT = 128 * 1024  # a longer field is almost always an unbalanced quote
# A record (its lines together) longer than this is refused unread: a subscriber's row is a
# few hundred bytes, and a whole JSON attributes cell fits many times over.
RECORD_LIMIT = 1024 * 1024
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
    overlong: bool = False  # past RECORD_LIMIT: not read, so no cells


@dataclass
class DecodeStats:
    utf8_lines: int = 0  # lines holding non-ASCII UTF-8
    cp1252_lines: int = 0
    first_cp1252_line: int | None = None
    replaced_lines: list[int] = field(default_factory=list)


def _c1_control(error: UnicodeError) -> tuple[str, int]:
    """Decode the five bytes cp1252 leaves unassigned as the C1 controls they are in latin-1.

    What browsers do (WHATWG windows-1252): a stray 0x81 no longer turns the `€` and `œ` of
    the same line into control characters, as a whole-line fallback to latin-1 would.
    """
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error("mailer.cp1252-c1", _c1_control)


def _decode_cp1252(raw: bytes) -> str:
    return raw.decode("cp1252", errors="mailer.cp1252-c1")


def _looks_binary(sample: bytes) -> bool:
    workbook = sample.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0"))
    return workbook or sample.count(b"\x00") > max(1, len(sample) // 100)


# Text codecs that cannot read a file line by line with replacement of bad bytes.
_UNUSABLE_CODECS = frozenset(
    {"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape"}
)


def _with_byte_order(codec: str, sample: bytes) -> str:
    """`utf-16` or `utf-32` forced on a file without a BOM: say which byte order.

    Python's decoder refuses to guess; a file starting with a NUL byte is big-endian,
    anything else little-endian (what Windows writes).
    """
    if codec not in ("utf-16", "utf-32") or sample.startswith(tuple(b for b, _ in _WIDE_BOMS)):
        return codec
    return f"{codec}-be" if sample[:1] == b"\x00" else f"{codec}-le"


def _normalise_encoding(name: str) -> str:
    """The codec's canonical name; InputError for an unknown codec or one that is not text."""
    hint = "for example utf-8, cp1252 or utf-16"
    try:
        info = codecs.lookup(name)
    except LookupError as exc:
        raise InputError(f"unknown encoding {name!r}", hint=hint) from exc
    try:
        usable = info._is_text_encoding and info.name not in _UNUSABLE_CODECS
        if usable:
            b"email,name\r\n\xff\xfe\x00".decode(info.name, errors="replace")
    except (UnicodeError, LookupError, ValueError, TypeError):
        usable = False
    if not usable:
        raise InputError(f"{name!r} is not an encoding a CSV file can be written in", hint=hint)
    return info.name


def _explain(error: csv.Error) -> str:
    """The csv module's message, in the user's terms."""
    message = str(error)
    if message.startswith("new-line character seen in unquoted field"):
        return "a line break (CR) inside a cell that is not quoted"
    if message.startswith("field larger than field limit"):
        return f"a cell longer than {FIELD_LIMIT} characters (an unbalanced quote?)"
    return message


def _size(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MiB" if limit % (1024 * 1024) == 0 else f"{limit:,} bytes"


def _overlong(start: int, end: int, limit: int) -> str:
    if start == end:
        return f"a line longer than {_size(limit)}, skipped unread"
    return f"lines {start}-{end} make a record longer than {_size(limit)} (an unbalanced quote?)"


class CsvSource:
    """A CSV file opened for streaming: `header`, then `records()`."""

    def __init__(
        self,
        path: Path,
        *,
        encoding: str | None = None,
        delimiter: str | None = None,
        record_limit: int | None = None,
    ):
        self.path = path
        self.record_limit = record_limit or RECORD_LIMIT
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
            self._wide = _with_byte_order(self._forced, sample)
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
            self._cr_only = "\n" not in sample_text and "\r" in sample_text
        else:
            sample_lines = self._decoded(self._raw_lines(io.BytesIO(sample)), count=False)
            sample_text = "".join(line for line in sample_lines if line is not None)
        self.delimiter = (
            detect(sample_text) if delimiter is None else self._check_delimiter(delimiter)
        )
        self._records = self._parse()
        self.header: list[str] = []
        self.header_line = 0
        # The first record as it was read: the data of a file that has no header row.
        self.header_record: Record | None = None
        for record in self._records:
            if record.overlong:  # what follows would be taken for the header: stop here
                self.close()
                raise InputError(
                    f"{path}: the first record (line {record.line}) is longer than "
                    f"{_size(self.record_limit)}: not a CSV header",
                    hint="a CSV export starts with a line of column names",
                )
            if record.error is None and any(cell.strip() for cell in record.cells):
                # Cleaned as names are: header names become attribute names and are printed.
                self.header = [clean_name(cell, None)[0] or "" for cell in record.cells]
                self.header_line = record.line
                self.header_record = record
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

    def _raw_lines(self, handle: BinaryIO) -> Iterator[bytes | None]:
        if self._cr_only:
            return cr_lines(handle, self.record_limit)
        return byte_lines(handle, self.record_limit)

    def _decoded(
        self, raw_lines: Iterator[bytes | None], *, count: bool = True
    ) -> Iterator[str | None]:
        """Decoded lines (None: too long, skipped); line numbers in `stats` are physical."""
        forced = self._forced
        for number, raw in enumerate(raw_lines, start=1):
            if raw is None:
                if count:
                    self.bytes_read = self._handle.tell()
                yield None
                continue
            if count:
                self.bytes_read += len(raw)
            if number == 1 and self._skip:
                raw = raw[self._skip :]
            if forced is not None:
                try:
                    yield raw.decode(forced)
                except UnicodeError:
                    if count:
                        self.stats.replaced_lines.append(number)
                    try:
                        yield raw.decode(forced, errors="replace")
                    except UnicodeError:  # a stateful codec (utf-7) may still choke
                        yield raw.decode("latin-1")
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

    def _lines(self) -> Iterator[str | None]:
        if self._wide is not None:
            # Lines end at LF as in the byte path (a stray CR is no line break), and
            # errors="replace": a truncated or corrupt UTF-16 file must not stop the import.
            newline = "\r" if self._cr_only else "\n"
            text = io.TextIOWrapper(
                self._handle, encoding=self._wide, newline=newline, errors="replace"
            )
            for number, line in enumerate(text_lines(text, self.record_limit, newline), 1):
                self.bytes_read = self._handle.tell()
                if line is not None and "\ufffd" in line:
                    self.stats.replaced_lines.append(number)
                yield line
            return
        yield from self._decoded(self._raw_lines(self._handle))

    def _parse(self) -> Iterator[Record]:
        csv.field_size_limit(FIELD_LIMIT)
        lines = RecordBound(self._lines(), self.record_limit)
        reader = csv.reader(lines, delimiter=self.delimiter, strict=False)
        previous_end = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except Overflow:
                start, previous_end = previous_end + 1, lines.line
                error = _overlong(start, previous_end, self.record_limit)
                yield Record(start, previous_end, [], error=error, overlong=True)
                continue
            except csv.Error as exc:
                lines.new_record()
                yield Record(previous_end + 1, lines.line, [], error=_explain(exc))
                previous_end = lines.line
                continue
            lines.new_record()
            start, previous_end = previous_end + 1, lines.line
            # A blank line, or a spreadsheet's empty row (`;;;;`), is no record.
            if any(cell.strip() for cell in cells):
                yield Record(start, previous_end, cells)

    def records(self) -> Iterator[Record]:
        """The data records after the header, streamed; blank lines and empty rows are skipped."""
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
    from mailer.imports.columns import is_email_header as default_check

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
