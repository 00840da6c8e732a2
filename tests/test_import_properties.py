"""Property tests: no input makes the importer crash, and its counts always add up.

Any bytes, any table of text in any supported encoding and delimiter: the importer either
refuses the whole file with an InputError (exit 1), or reads it, and then every record becomes
exactly one outcome, line numbers point into the file, and
rows == imported + updated + unchanged + duplicates + len(rejected).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from mailer import api
from mailer.core.addresses import clean_address, clean_name
from mailer.core.config import Settings
from mailer.core.errors import AddressError, InputError
from mailer.core.people import Candidate, Notice, Rejection
from mailer.imports.columns import map_columns
from mailer.imports.csvsource import CsvSource
from mailer.imports.records import parse_record

PURE = examples(max_examples=150, deadline=None)
WITH_DATABASE = examples(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

BOMS = [b"", codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE]
CSV_BYTES = st.lists(
    st.sampled_from(
        [
            *(b",", b";", b"\t", b"|", b'"', b"\r", b"\n", b"\r\n", b"@", b".", b" ", b"\xa0"),
            *(b"a", b"email", b"courriel", b"x@y.fr", b"\xc3\xa9", b"\xe9", b"\x81", b"\x00"),
            *(b"\xff\xfe", b"\xef\xbb\xbf", b"\x00\xd8", b"=", b"<", b">", b"mailto:"),
            b"\xe2\x80\xae",
        ]
    ),
    max_size=80,
).map(b"".join)
FILE_BYTES = st.one_of(
    st.binary(max_size=600),
    st.tuples(st.sampled_from(BOMS), CSV_BYTES).map(b"".join),
    st.tuples(st.sampled_from([b"email,name\n", b"\xef\xbb\xbfEmail;Nom\r\n"]), CSV_BYTES).map(
        b"".join
    ),
)

INTERESTING_CELLS = [
    "",
    " ",
    "anne@exemple.fr",
    "ANNE@Exemple.FR",
    "  bob@x.fr\u00a0",
    "josé@exemple.fr",
    "user@bücher.de",
    "USER@xn--bcher-kva.de",
    "mailto:carol@x.fr",
    "Dave <dave@x.fr>",
    "a@x.fr, b@x.fr",
    '=HYPERLINK("http://x")',
    "+33 6 12",
    "@cmd",
    "unsubscribed",
    "blocklisted",
    "bounced",
    "enabled",
    "peut-être",
    '{"city": "Paris"}',
    "[1, 2]",
    '{"x": NaN}',
    "Grace\rHopper",
    "Ken\nLane",
    "\u202eevE",
    "Ann\x00e",
    "Hélène",
    "Œdipe",
    '"quoted"',
    "a,b;c\td|e",
    "x" * 300,
]
CELL = st.one_of(
    st.sampled_from(INTERESTING_CELLS),
    st.sampled_from([f"p{i}@exemple.fr" for i in range(6)]),  # duplicates, in and across files
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
)
HEADER_NAMES = [
    "Prénom",
    "Nom",
    "name",
    "Civilité",
    "status",
    "attributes",
    "UNSUB_TIME",
    "CLEAN_TIME",
    "Ville",
    "Courriel",
    "",
]


@st.composite
def tables(draw: st.DrawFn) -> list[list[str]]:
    """A header with an email column somewhere, and ragged rows of awkward cells."""
    others = draw(
        st.lists(st.one_of(st.sampled_from(HEADER_NAMES), st.text(max_size=8)), max_size=5)
    )
    header = draw(st.permutations(["E-mail", *others]))
    width = len(header)
    rows = draw(
        st.lists(st.lists(CELL, min_size=max(0, width - 2), max_size=width + 2), max_size=12)
    )
    return [header, *rows]


def encode_table(rows: list[list[str]], encoding: str, delimiter: str, newline: str) -> bytes:
    """The table as a valid CSV file; characters the encoding lacks become `?` first.

    With LF line ends every cell is quoted: the csv module would leave a CR unquoted.
    """
    safe = [[cell.encode(encoding, "replace").decode(encoding) for cell in row] for row in rows]
    buffer = io.StringIO()
    quoting = csv.QUOTE_MINIMAL if newline == "\r\n" else csv.QUOTE_ALL
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=newline, quoting=quoting)
    writer.writerows(safe)
    return buffer.getvalue().encode(encoding)


def physical_lines(content: bytes) -> int:
    return max(1, content.count(b"\n") + content.count(b"\r") - content.count(b"\r\n") + 1)


def check_records(path: Path, **options: str) -> tuple[int, int]:
    """Read `path` as the importer does; return (records, outcomes) or raise InputError."""
    with CsvSource(path, **options) as source:
        columns = map_columns(source.header, attributes=["*"])
        records = outcomes = 0
        for record in source.records():
            records += 1
            produced = list(parse_record(record, columns))
            assert all(isinstance(o, Notice) for o in produced[:-1])
            assert isinstance(produced[-1], Candidate | Rejection)
            assert all(o.line == record.line for o in produced)
            assert source.header_line < record.line <= record.end_line
            outcomes += 1
        return records, outcomes


def check_report(report: api.ImportReport, lines: int) -> None:
    assert report.rows == (
        report.imported
        + report.updated
        + report.unchanged
        + report.duplicates
        + len(report.rejected)
    )
    # Line 1 is the header, unless the file has none (then it is data, and said so).
    headerless = any(w.message.startswith("no header row:") for w in report.warnings)
    first_data_line = 1 if headerless else 2
    assert all(first_data_line <= r.line <= lines for r in report.rejected)
    assert all(1 <= w.line <= lines for w in report.warnings)
    assert [r.line for r in report.rejected] == sorted(r.line for r in report.rejected)
    data = report.to_json()
    assert all(set(r) == {"line", "reason"} for r in data["rejected"])


# --- without a database: fast, many examples ----------------------------------------------


@PURE
@given(content=FILE_BYTES)
def test_arbitrary_bytes_are_refused_or_read_record_by_record(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "any.csv"
        path.write_bytes(content)
        try:
            records, outcomes = check_records(path)
        except InputError:
            return
        assert records == outcomes


@PURE
@given(
    content=CSV_BYTES,
    encoding=st.sampled_from(["utf-8", "cp1252", "latin-1", "utf-16", "utf-7", "shift_jis"]),
    delimiter=st.sampled_from([",", ";", "tab", "|", ":"]),
)
def test_forced_encoding_and_delimiter_never_crash(
    content: bytes, encoding: str, delimiter: str
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "any.csv"
        path.write_bytes(b"email,name;x\tz|y:w\n" + content)
        with contextlib.suppress(InputError):
            check_records(path, encoding=encoding, delimiter=delimiter)


@PURE
@given(
    table=tables(),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "cp1252", "utf-16"]),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    newline=st.sampled_from(["\r\n", "\n"]),
)
def test_every_written_row_comes_back_as_exactly_one_outcome(
    table: list[list[str]], encoding: str, delimiter: str, newline: str
) -> None:
    # NUL-heavy text would rightly be refused as binary: keep this a round trip.
    table = [[cell.replace("\x00", "") for cell in row] for row in table]
    content = encode_table(table, encoding, delimiter, newline)
    expected = sum(1 for row in table[1:] if any(cell.strip() for cell in row))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.csv"
        path.write_bytes(content)
        records, outcomes = check_records(path, encoding=encoding, delimiter=delimiter)
    assert records == outcomes == expected


@PURE
@given(raw=CELL)
def test_address_cleaning_either_refuses_or_is_idempotent(raw: str) -> None:
    try:
        address, _ = clean_address(raw)
    except AddressError:
        return
    again, notes = clean_address(address.email)
    assert again == address
    assert notes == []
    assert address.address.split("@")[1].isascii()
    assert address.smtputf8 == (not address.address.isascii())


@PURE
@given(raw=CELL, limit=st.integers(min_value=1, max_value=200))
def test_name_cleaning_is_idempotent_and_leaves_no_control_characters(raw: str, limit: int) -> None:
    name, _ = clean_name(raw, limit)
    if name is None:
        return
    assert len(name) <= limit
    assert name == name.strip()
    assert not any(c in name for c in "\x00\r\n\t\u202e\u2066")
    assert clean_name(name, limit) == (name, False)


# --- through api.import_subscribers, on SQLite and PostgreSQL ----------------------------


@WITH_DATABASE
@given(content=FILE_BYTES, dry_run=st.booleans())
def test_import_of_arbitrary_bytes_is_refused_or_adds_up(
    settings: Settings, content: bytes, dry_run: bool
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "any.csv"
        path.write_bytes(content)
        try:
            report = api.import_subscribers(settings, path, dry_run=dry_run)
        except InputError:
            return
    check_report(report, physical_lines(content))


@WITH_DATABASE
@given(
    table=tables(),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "cp1252", "utf-16"]),
    delimiter=st.sampled_from([",", ";", "\t"]),
    attributes=st.sampled_from([None, ["*"], ["attributes"]]),
)
def test_import_of_arbitrary_tables_adds_up_and_a_second_run_changes_nothing(
    settings: Settings,
    table: list[list[str]],
    encoding: str,
    delimiter: str,
    attributes: list[str] | None,
) -> None:
    content = encode_table(table, encoding, delimiter, "\r\n")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.csv"
        path.write_bytes(content)
        try:
            first = api.import_subscribers(settings, path, attributes=attributes)
        except InputError:
            return  # NUL-heavy text: refused as binary before anything is written
        second = api.import_subscribers(settings, path, attributes=attributes)
    for report in (first, second):
        check_report(report, physical_lines(content))
    assert second.rows == first.rows
    assert (second.imported, second.updated) == (0, 0)
    assert second.duplicates == first.duplicates
