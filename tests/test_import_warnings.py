"""Issue 14 for `mailer import`: what it changes it says, what it stores is clean, what it reads
is bounded, and the rejects file is private.

Through the CLI on a SQLite file and on PostgreSQL. The bounds are pinned by the message that
names the line; the memory they save is measured by benchmarks, never by a timed test.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Result, write_csv
from tests.test_import import counts, listing, people, rejected, run_import, warnings

Cli = Callable[..., Result]
SMTPUTF8_NOTE = "address not ASCII before the @: only a relay offering SMTPUTF8 can deliver it"


def write_rows(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which a plain open() creates files 0644."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


# --- item 10: the import says what it changes ---------------------------------------------


def test_names_cut_to_their_stored_length_are_warned(cli: Cli, tmp_path: Path) -> None:
    civility = "Directrice générale adjointe des services techniques municipaux"
    source = write_csv(
        tmp_path / "long.csv",
        f"email;prénom;titre\na@x.fr;{'É' * 250};{civility}\nb@x.fr;Anne;Mme\n",
    )

    report = run_import(cli, str(source))

    assert warnings(report) == [
        (2, "first_name cut to 200 characters, the stored length"),
        (2, "civility cut to 50 characters, the stored length"),
    ]
    assert people(cli)["a@x.fr"][0] == "É" * 200
    assert listing(cli)[0]["civility"] == civility[:50].rstrip()


def test_a_full_name_is_cut_after_it_is_split_and_the_cut_part_is_named(
    cli: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "n.csv", f"email,name\na@x.fr,Anne {'x' * 250}\n")

    report = run_import(cli, str(source))

    assert warnings(report) == [(2, "last_name cut to 200 characters, the stored length")]
    assert people(cli) == {"a@x.fr": ("Anne", "x" * 200, "active")}


def test_a_row_with_fewer_cells_than_the_header_is_warned(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "short.csv",
        "email;prénom;nom;ville\n"
        "a@x.fr;Anne Dupont;Lyon\n"  # a lost `;`: every later cell moved left
        "b@x.fr;Bob;Roux;Paris\n"
        "c@x.fr\n"
        "d@x.fr;Dan;Vidal;;\n",  # a trailing empty cell more: what spreadsheets write
    )

    report = run_import(cli, str(source))

    assert counts(report) == (4, 4, 0, 0, 0, 0)
    assert warnings(report) == [
        (2, "3 cells but the header has 4; the missing read as empty"),
        (4, "1 cell but the header has 4; the missing read as empty"),
    ]


def test_an_address_that_needs_smtputf8_is_warned(cli: Cli, tmp_path: Path) -> None:
    # An IDN domain is converted to ASCII for the wire; only a non-ASCII local part needs
    # the relay's SMTPUTF8.
    source = write_csv(tmp_path / "u.csv", "email\njosé@exemple.fr\nuser@bücher.de\n")

    report = run_import(cli, str(source))

    assert counts(report) == (2, 2, 0, 0, 0, 0)
    assert warnings(report) == [(2, SMTPUTF8_NOTE)]


def test_a_full_name_written_family_name_comma_given_name_is_split_at_the_comma(
    cli: Cli, tmp_path: Path
) -> None:
    source = write_rows(
        tmp_path / "comma.csv",
        [
            ["email", "Nom complet"],
            ["a@x.fr", "Durand, Michel"],
            ["b@x.fr", "DURAND, Michel"],
            ["c@x.fr", "Le Goff , Anne-Marie"],
            ["d@x.fr", "Durand,"],
            ["e@x.fr", "Hélène Dupont"],
        ],
    )

    report = run_import(cli, str(source))

    assert warnings(report) == []
    assert people(cli) == {
        "a@x.fr": ("Michel", "Durand", "active"),
        "b@x.fr": ("Michel", "DURAND", "active"),
        "c@x.fr": ("Anne-Marie", "Le Goff", "active"),
        "d@x.fr": (None, "Durand", "active"),  # greeted "Bonjour,", never "Bonjour Durand,,"
        "e@x.fr": ("Hélène", "Dupont", "active"),
    }


# --- item 14: attributes are cleaned as names are ------------------------------------------


def test_one_nul_in_an_attribute_loses_neither_the_row_nor_its_batch(
    cli: Cli, tmp_path: Path
) -> None:
    # PostgreSQL refused the batch (UntranslatableCharacter), with a traceback of its rows.
    source = write_csv(
        tmp_path / "nul.csv", "email;Ville\na@x.fr;Lyon\nb@x.fr;Par\x00is\nc@x.fr;Nice\n"
    )

    report = run_import(cli, str(source), "--attribute", "Ville")

    assert counts(report) == (3, 3, 0, 0, 0, 0)
    assert warnings(report) == [(3, "control characters removed from attribute 'Ville'")]
    assert [p["attributes"] for p in listing(cli)] == [
        {"Ville": "Lyon"},
        {"Ville": "Paris"},
        {"Ville": "Nice"},
    ]


def test_nul_escapes_and_bidi_in_attributes_are_removed_with_a_warning(
    cli: Cli, tmp_path: Path
) -> None:
    # On PostgreSQL the NUL alone used to lose the whole batch (UntranslatableCharacter).
    listmonk = json.dumps(
        {
            "city": "Ly\u0000on",
            "tags": ["\u001b[2Jvip", 3],
            "k\u0007ey": {"deep": "\ud800x"},  # a lone surrogate: no database stores it
            "n": 1.5,
            "ok": True,
        }
    )
    source = write_rows(
        tmp_path / "attrs.csv",
        [
            ["email", "Ville", "Note", "attributes"],
            ["a@x.fr", "Par\x00is", "\x1b[31mrouge\x1b[0m", listmonk],
            ["b@x.fr", "Lyon", "\u202eevE", ""],
            ["c@x.fr", "Nice", "ok", '{"n": 1e400}'],  # read as inf: PostgreSQL refuses it
        ],
    )

    report = run_import(cli, str(source), "--attribute", "*")

    assert counts(report) == (3, 3, 0, 0, 0, 0)
    assert warnings(report) == [
        (2, "control characters removed from attribute 'Ville'"),
        (2, "control characters removed from attribute 'Note'"),
        (2, "control characters removed from attribute 'attributes'"),
        (3, "control characters removed from attribute 'Note'"),
        (4, "attributes column is not a JSON object; kept as text"),
    ]
    assert {p["email"]: p["attributes"] for p in listing(cli)} == {
        "a@x.fr": {
            "Ville": "Paris",
            "Note": "[31mrouge[0m",
            "city": "Lyon",
            "tags": ["[2Jvip", 3],
            "key": {"deep": "x"},
            "n": 1.5,
            "ok": True,
        },
        "b@x.fr": {"Ville": "Lyon", "Note": "evE"},
        "c@x.fr": {"Ville": "Nice", "Note": "ok", "attributes": '{"n": 1e400}'},
    }


def test_column_names_reach_the_terminal_without_escape_sequences(
    cli: Cli, tmp_path: Path
) -> None:
    source = write_rows(
        tmp_path / "h.csv",
        [["email", "Vi\x1b[2Jlle", "No\x1b]0;pwned\x07te"], ["a@x.fr", "Lyon", "x"]],
    )

    shown = cli("import", str(source))
    stored = run_import(cli, str(source), "--attribute", "Vi[2Jlle")

    assert shown.code == 0, shown.stderr
    assert "\x1b" not in shown.stdout + shown.stderr
    assert "\x07" not in shown.stdout + shown.stderr
    assert stored["ignored_columns"] == ["No]0;pwnedte"]
    assert listing(cli)[0]["attributes"] == {"Vi[2Jlle": "Lyon"}


# --- item 14: a record is bounded ---------------------------------------------------------


def test_a_line_past_the_record_bound_is_rejected_by_its_line_and_the_rest_imports(
    cli: Cli, tmp_path: Path
) -> None:
    # 3 MB on one line, past the 1 MiB bound (a 200 MB line is read the same way: in
    # chunks, never whole; benchmarks/README.md has the peak memory).
    source = tmp_path / "long.csv"
    source.write_bytes(
        b"email,name\na@x.fr,Anne\nb@x.fr," + b"x" * (3 * 1024 * 1024) + b"\nc@x.fr,Cid\n"
    )
    rejects = tmp_path / "rejets.csv"

    report = run_import(cli, str(source), "--rejects", str(rejects))

    assert counts(report) == (3, 2, 0, 0, 0, 1)
    assert rejected(report) == [
        (3, "unreadable CSV record: a line longer than 1 MiB, skipped unread")
    ]
    assert sorted(people(cli)) == ["a@x.fr", "c@x.fr"]
    assert rejects.stat().st_size < 200  # the line and the reason, not the 3 MB


def test_a_first_line_past_the_record_bound_is_an_error_naming_it(
    cli: Cli, tmp_path: Path
) -> None:
    source = tmp_path / "blob.csv"
    source.write_bytes(b"x" * (2 * 1024 * 1024) + b"\nemail\na@x.fr\n")

    result = cli("import", str(source))

    assert result.code == 1
    assert "Traceback" not in result.stderr
    assert "the first record (line 1) is longer than 1 MiB: not a CSV header" in result.stderr
    assert listing(cli) == []


# --- item 15: the rejects file holds personal data ----------------------------------------


def test_rejects_file_is_created_readable_by_its_owner_only(
    cli: Cli, tmp_path: Path, umask_022: None
) -> None:
    source = write_csv(tmp_path / "r.csv", "email;nom\nnope;Anne Dupont\nok@x.fr;Bob\n")
    fresh = tmp_path / "rejets.csv"
    left_over = tmp_path / "ancien.csv"  # from an earlier run, or made by hand
    left_over.write_text("old")
    left_over.chmod(0o644)

    run_import(cli, str(source), "--rejects", str(fresh))
    run_import(cli, str(source), "--dry-run", "--rejects", str(left_over))

    for path in (fresh, left_over):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert "Anne Dupont" in path.read_text("utf-8-sig")
