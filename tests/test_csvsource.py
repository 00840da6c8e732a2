"""CsvSource: encodings, delimiters, quoting and physical line numbers, without a database."""

from __future__ import annotations

import codecs
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO, cast

import pytest

from mailer.core.errors import InputError
from mailer.imports.csvsource import FIELD_LIMIT, RECORD_LIMIT, CsvSource, Record, detect
from mailer.imports.lines import CHUNK, byte_lines, cr_lines, text_lines
from tests.conftest import FIXTURES


def read(path: Path, **options: Any) -> tuple[CsvSource, list[Record]]:
    with CsvSource(path, **options) as source:
        return source, list(source.records())


def write(tmp_path: Path, content: bytes, name: str = "f.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def lines_and_cells(records: list[Record]) -> list[tuple[int, int, list[str]]]:
    return [(r.line, r.end_line, r.cells) for r in records]


# --- encodings ----------------------------------------------------------------------------


def test_utf8_file_is_read_as_utf8(tmp_path: Path) -> None:
    source, records = read(write(tmp_path, "email,prénom\na@x.fr,Zoë\n".encode()))

    assert source.encoding == "utf-8"
    assert source.header == ["email", "prénom"]
    assert records[0].cells == ["a@x.fr", "Zoë"]


def test_utf8_bom_is_dropped_from_the_first_header_cell(tmp_path: Path) -> None:
    source, records = read(write(tmp_path, '\ufeff"email";"prénom"\r\na@x.fr;Zoë\r\n'.encode()))

    assert source.encoding == "utf-8-sig"
    assert source.header == ["email", "prénom"]
    assert source.delimiter == ";"
    assert records[0].cells == ["a@x.fr", "Zoë"]


def test_cp1252_file_is_detected_without_being_told(tmp_path: Path) -> None:
    content = "Prénom;Nom;Courriel\r\nŒdipe;Müller;o@x.fr\r\nJean-Noël;Cœur € ;j@x.fr\r\n"
    source, records = read(write(tmp_path, content.encode("cp1252")))

    assert source.encoding == "windows-1252"
    assert source.header == ["Prénom", "Nom", "Courriel"]
    assert [r.cells for r in records] == [
        ["Œdipe", "Müller", "o@x.fr"],
        ["Jean-Noël", "Cœur € ", "j@x.fr"],
    ]


def test_cp1252_unassigned_byte_does_not_garble_the_rest_of_its_line(tmp_path: Path) -> None:
    # 0x81 has no character in cp1252; the € and œ around it must survive.
    source, records = read(write(tmp_path, b"email,name\na@x.fr,\x80 \x81 \x9cuvre\n"))

    assert records[0].cells == ["a@x.fr", "€ \x81 œuvre"]
    assert source.encoding == "windows-1252"


def test_mixed_utf8_and_cp1252_lines_are_each_decoded_right(tmp_path: Path) -> None:
    content = "email,nom\na@x.fr,Hélène\n".encode() + "b@x.fr,Hélène\n".encode("cp1252")
    source, records = read(write(tmp_path, content))

    assert [r.cells[1] for r in records] == ["Hélène", "Hélène"]
    assert source.encoding == "mixed utf-8/windows-1252"
    assert source.stats.first_cp1252_line == 3


def test_utf16_with_bom_tab_separated_is_read(tmp_path: Path) -> None:
    source, records = read(FIXTURES / "excel_unicode.txt")

    assert source.encoding == "utf-16"
    assert source.delimiter == "\t"
    assert source.header == ["Civilité", "Prénom", "Nom", "Adresse e-mail", "Ville"]
    assert lines_and_cells(records)[2] == (4, 4, ["Mme", "美咲", "佐藤", "misaki@例え.jp", "東京"])


@pytest.mark.parametrize("codec", ["utf-16-be", "utf-32-le"])
def test_other_wide_encodings_with_bom_are_read(tmp_path: Path, codec: str) -> None:
    bom = codecs.BOM_UTF16_BE if codec == "utf-16-be" else codecs.BOM_UTF32_LE
    content = bom + "email\tnom\r\na@x.fr\tŁódź\r\n".encode(codec)
    source, records = read(write(tmp_path, content))

    assert source.delimiter == "\t"
    assert records[0].cells == ["a@x.fr", "Łódź"]


def test_corrupt_utf16_is_read_with_replacement_characters(tmp_path: Path) -> None:
    content = (
        codecs.BOM_UTF16_LE
        + "email\na@x.fr\n".encode("utf-16-le")
        + b"\x00\xd8"
        + "b\n".encode("utf-16-le")
    )
    source, records = read(write(tmp_path, content))

    assert [r.cells for r in records] == [["a@x.fr"], ["\ufffdb"]]
    assert source.stats.replaced_lines == [3]


def test_forced_encoding_is_used_and_bad_bytes_are_replaced(tmp_path: Path) -> None:
    source, records = read(
        write(tmp_path, b"email,nom\na@x.fr,H\x82l\x8ane\nb@x.fr,\xff\n"), encoding="cp850"
    )

    assert source.encoding == "cp850"
    assert [r.cells[1] for r in records] == ["Hélène", "\xa0"]

    source, records = read(write(tmp_path, b"email,nom\na@x.fr,Ann\xe9e\n"), encoding="utf8")

    assert source.encoding == "utf-8"
    assert records[0].cells[1] == "Ann\ufffde"
    assert source.stats.replaced_lines == [2]


def test_forced_utf16_reads_a_file_without_bom(tmp_path: Path) -> None:
    source, records = read(
        write(tmp_path, "email;nom\na@x.fr;Zoë\n".encode("utf-16-le")), encoding="utf-16-le"
    )

    assert source.header == ["email", "nom"]
    assert records[0].cells == ["a@x.fr", "Zoë"]


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("no-such-codec", "unknown encoding 'no-such-codec'"),
        ("rot13", "'rot13' is not an encoding a CSV file can be written in"),
        ("zlib", "'zlib' is not an encoding a CSV file can be written in"),
        ("idna", "'idna' is not an encoding a CSV file can be written in"),
        ("punycode", "'punycode' is not an encoding a CSV file can be written in"),
        ("undefined", "'undefined' is not an encoding a CSV file can be written in"),
    ],
)
def test_unusable_encoding_is_an_input_error(tmp_path: Path, encoding: str, message: str) -> None:
    path = write(tmp_path, b"email\na@x.fr\n")

    with pytest.raises(InputError, match="encoding") as raised:
        CsvSource(path, encoding=encoding)
    assert raised.value.message == message


# --- delimiters ---------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_detected_from_the_header_and_first_rows(
    tmp_path: Path, delimiter: str
) -> None:
    rows = [["Nom", "Prénom", "E-mail"], ["Roux", "Anne", "a@x.fr"], ["Noir", "Bob", "b@x.fr"]]
    content = "\r\n".join(delimiter.join(row) for row in rows) + "\r\n"
    source, records = read(write(tmp_path, content.encode()))

    assert source.delimiter == delimiter
    assert [r.cells for r in records] == rows[1:]


def test_delimiter_detection_prefers_the_one_that_reveals_an_email_column() -> None:
    # Names with commas: ',' gives more columns, but only ';' shows an email header.
    sample = "Nom, prénom;Email\nDupont, Anne;a@x.fr\nRoux, Bob;b@x.fr\n"

    assert detect(sample) == ";"


def test_delimiter_detection_without_an_email_header_uses_consistent_widths() -> None:
    sample = "Contact;Qui;Ville\na@x.fr;Anne, dite Nan;Pau\nb@x.fr;Bob;Gap\n"

    assert detect(sample) == ";"


@pytest.mark.parametrize(
    ("option", "expected"),
    [(":", ":"), ("tab", "\t"), ("TAB", "\t"), ("\\t", "\t"), ("semicolon", ";"), ("pipe", "|")],
)
def test_forced_delimiter_accepts_a_character_or_a_name(
    tmp_path: Path, option: str, expected: str
) -> None:
    path = write(tmp_path, f"email{expected}nom\na@x.fr{expected}Roux\n".encode())
    source, records = read(path, delimiter=option)

    assert source.delimiter == expected
    assert records[0].cells == ["a@x.fr", "Roux"]


@pytest.mark.parametrize("option", [";;", "", '"', "\n", "\r"])
def test_forced_delimiter_that_cannot_work_is_an_input_error(tmp_path: Path, option: str) -> None:
    with pytest.raises(InputError, match="invalid delimiter"):
        CsvSource(write(tmp_path, b"email\na@x.fr\n"), delimiter=option)


# --- quoting and line numbers -------------------------------------------------------------


def test_quoted_fields_keep_delimiters_quotes_and_newlines_with_physical_line_numbers(
    tmp_path: Path,
) -> None:
    content = (
        "email,name,note\r\n"  # 1
        'a@x.fr,"Dupont, Anne","dit ""Nan""\r\n'  # 2
        'sur deux lignes"\r\n'  # 3
        "\r\n"  # 4
        'b@x.fr,Bob,"un\n\ndeux"\n'  # 5-7
        "c@x.fr,Cé,\r\n"  # 8
    )
    source, records = read(write(tmp_path, content.encode()))

    assert source.header_line == 1
    assert lines_and_cells(records) == [
        (2, 3, ["a@x.fr", "Dupont, Anne", 'dit "Nan"\r\nsur deux lignes']),
        (5, 7, ["b@x.fr", "Bob", "un\n\ndeux"]),
        (8, 8, ["c@x.fr", "Cé", ""]),
    ]


def test_blank_lines_and_empty_spreadsheet_rows_are_no_records(tmp_path: Path) -> None:
    content = b"\r\n\r\nemail;nom;ville\r\n;;\r\na@x.fr;Roux;\r\n  ; ;\r\n\r\nb@x.fr;;\r\n;;\r\n"
    source, records = read(write(tmp_path, content))

    assert source.header_line == 3
    assert [(r.line, r.cells) for r in records] == [
        (5, ["a@x.fr", "Roux", ""]),
        (8, ["b@x.fr", "", ""]),
    ]


def test_old_mac_cr_line_endings_are_lines(tmp_path: Path) -> None:
    source, records = read(write(tmp_path, b'email,name\ra@x.fr,"A\rB"\r\rb@x.fr,C'))

    assert source.header == ["email", "name"]
    assert lines_and_cells(records) == [
        (2, 3, ["a@x.fr", "A\rB"]),
        (5, 5, ["b@x.fr", "C"]),
    ]


def test_stray_cr_in_an_unquoted_cell_is_a_record_error_on_its_line(tmp_path: Path) -> None:
    _, records = read(write(tmp_path, b"email,name\na@x.fr,An\rne\nb@x.fr,Bob\n"))

    assert records[0] == Record(
        2, 2, [], error="a line break (CR) inside a cell that is not quoted"
    )
    assert lines_and_cells(records[1:]) == [(3, 3, ["b@x.fr", "Bob"])]


def test_unbalanced_quote_reads_to_the_end_of_the_file_as_one_record(tmp_path: Path) -> None:
    _, records = read(write(tmp_path, b'email,name\na@x.fr,"Anne\nb@x.fr,Bob\nc@x.fr,C\n'))

    assert lines_and_cells(records) == [(2, 4, ["a@x.fr", "Anne\nb@x.fr,Bob\nc@x.fr,C\n"])]


def test_overlong_cell_is_a_record_error_and_reading_goes_on(tmp_path: Path) -> None:
    content = b'email,name\na@x.fr,"' + b"x" * 140_000 + b"\nb@x.fr,Bob\n"
    _, records = read(write(tmp_path, content))

    assert records[0].error == "a cell longer than 131072 characters (an unbalanced quote?)"
    assert records[0].line == 2
    assert records[-1].cells == ["b@x.fr", "Bob"]


def test_nul_characters_in_a_text_file_are_kept_for_the_importer_to_clean(tmp_path: Path) -> None:
    _, records = read(write(tmp_path, b"email,name\na@x.fr,An\x00ne\n"))

    assert records[0].cells == ["a@x.fr", "An\x00ne"]


def test_progress_reaches_the_file_size(tmp_path: Path) -> None:
    path = write(tmp_path, b"email\n" + b"a@x.fr\n" * 1000)
    with CsvSource(path) as source:
        assert sum(1 for _ in source.records()) == 1000
        assert source.progress() == (path.stat().st_size, path.stat().st_size)


# --- files that are no CSV ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty: no header row"),
        (b"\n\r\n   \n\t\n", "is empty: no header row"),
        (b"PK\x03\x04" + bytes(100), "is not CSV text (a spreadsheet workbook?)"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), "is not CSV text"),
        ("email\na@x.fr\n".encode("utf-16-le"), "is not CSV text"),  # UTF-16 without BOM
    ],
)
def test_file_that_is_no_csv_is_an_input_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    with pytest.raises(InputError) as raised:
        CsvSource(write(tmp_path, content))
    assert message in raised.value.message


def test_missing_file_and_folder_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="No such file or directory"):
        CsvSource(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="is a folder, not a CSV file"):
        CsvSource(tmp_path)


# --- bounds: no line or record is held whole past RECORD_LIMIT (issue 14) ----------------


@pytest.mark.parametrize(
    ("encoding", "newline"),
    [("utf-8", "\n"), ("utf-8", "\r\n"), ("utf-8", "\r"), ("utf-16", "\n"), ("utf-16", "\r")],
    ids=["lf", "crlf", "cr", "utf16-lf", "utf16-cr"],
)
def test_a_line_past_the_record_limit_is_an_error_on_its_line_and_reading_goes_on(
    tmp_path: Path, encoding: str, newline: str
) -> None:
    rows = ["email,name", "a@x.fr,Anne", "b@x.fr," + "x" * 5000, "c@x.fr,Cid"]
    path = write(tmp_path, (newline.join(rows) + newline).encode(encoding))

    _, records = read(path, record_limit=1000)

    assert [(r.line, r.end_line, r.cells, r.error) for r in records] == [
        (2, 2, ["a@x.fr", "Anne"], None),
        (3, 3, [], "a line longer than 1,000 bytes, skipped unread"),
        (4, 4, ["c@x.fr", "Cid"], None),
    ]


def test_lines_that_add_up_past_the_record_limit_are_an_error_naming_them(
    tmp_path: Path,
) -> None:
    # Each line is short, but an open quote runs them into one record.
    content = b'email,name\na@x.fr,"Anne\n' + (b"y" * 600 + b"\n") * 3 + b"b@x.fr,Bob\n"

    _, records = read(write(tmp_path, content), record_limit=1000)

    assert [(r.line, r.end_line, r.error) for r in records] == [
        (2, 4, "lines 2-4 make a record longer than 1,000 bytes (an unbalanced quote?)"),
        (5, 5, None),
        (6, 6, None),
    ]
    assert records[-1].cells == ["b@x.fr", "Bob"]


def test_the_default_record_limit_is_one_mib_and_holds_the_largest_cell() -> None:
    assert RECORD_LIMIT == 1024 * 1024
    assert RECORD_LIMIT > 4 * FIELD_LIMIT  # a cell at its limit, even in UTF-8, fits a record


def test_a_first_record_past_the_limit_is_no_header(tmp_path: Path) -> None:
    path = write(tmp_path, b"\n" + b"x" * 5000 + b"\nemail\na@x.fr\n")

    with pytest.raises(InputError) as raised:
        CsvSource(path, record_limit=1000)

    assert raised.value.message == (
        f"{path}: the first record (line 2) is longer than 1,000 bytes: not a CSV header"
    )


class _Recording(io.BytesIO):
    """A file that remembers the most bytes one read handed out."""

    largest = 0

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(size)
        self.largest = max(self.largest, len(line))
        return line

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.largest = max(self.largest, len(data))
        return data


@pytest.mark.parametrize("reader", [byte_lines, cr_lines])
def test_a_long_line_is_skipped_in_chunks_never_read_whole(
    reader: Callable[[BinaryIO, int], Iterator[bytes | None]],
) -> None:
    end = b"\r" if reader is cr_lines else b"\n"
    handle = _Recording(b"a" + end + b"x" * 3_000_000 + end + b"b" + end)

    lines = list(reader(handle, 1000))

    assert lines == [b"a" + end, None, b"b" + end]
    assert handle.largest <= CHUNK


def test_a_long_decoded_line_is_skipped_in_chunks_never_read_whole() -> None:
    class Recording:
        largest = 0

        def __init__(self, text: str) -> None:
            self._text = io.StringIO(text, newline="\n")

        def readline(self, size: int = -1) -> str:
            line = self._text.readline(size)
            self.largest = max(self.largest, len(line))
            return line

    handle = Recording("a\n" + "x" * 3_000_000 + "\nb\n")

    assert list(text_lines(cast(TextIO, handle), 1000, "\n")) == ["a\n", None, "b\n"]
    assert handle.largest <= CHUNK
