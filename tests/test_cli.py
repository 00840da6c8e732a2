"""The command line as users and cron see it: help, output, errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailer.cli import app
from tests.conftest import write_csv

# The command reference: every command appears there (tests/test_docs.py checks its options).
REFERENCE = Path(__file__).parent.parent / "docs" / "reference.md"


def _commands() -> list[list[str]]:
    import typer.main

    group = typer.main.get_command(app)
    found: list[list[str]] = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        sub = getattr(command, "commands", None)
        if sub:
            found.extend([name, child] for child in sub)
        else:
            found.append([name])
    return found


COMMANDS = _commands()


def test_the_contract_commands_of_this_release_exist() -> None:
    assert {" ".join(c) for c in COMMANDS} >= {
        "import",
        "status",
        "subscribers list",
        "subscribers unsubscribe",
        "subscribers forget",
    }


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_explains_itself_with_an_example(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from mailer.cli import main

    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert "Example: mailer " + command[0] in capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_is_documented_in_the_reference(command: list[str]) -> None:
    assert f"mailer {' '.join(command)}" in REFERENCE.read_text(encoding="utf-8")


@pytest.mark.usefixtures("database_url")
def test_import_prints_a_summary_and_the_rejected_lines(cli, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "liste.csv",
        "Adresse e-mail;Prénom;Téléphone\r\nhelene@exemple.fr;Hélène;0102\r\nnope;X;3\r\n",
        encoding="cp1252",
    )
    result = cli("import", str(source))
    assert result.code == 0, result.stderr
    assert "liste.csv (windows-1252, delimiter ';'): 2 rows" in result.stdout
    assert "  imported          1\n" in result.stdout
    assert "line 3: invalid address" in result.stdout
    assert "Not stored: Téléphone" in result.stdout


@pytest.mark.usefixtures("database_url")
def test_import_json_has_the_contract_keys(cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "l.csv", "email\na@exemple.fr\na@exemple.fr\n\nbad\n")
    data = json.loads(cli("import", str(source), "--json").stdout)
    assert {
        k: data[k] for k in ("file", "rows", "imported", "updated", "unchanged", "duplicates")
    } == {
        "file": "l.csv",
        "rows": 3,
        "imported": 1,
        "updated": 0,
        "unchanged": 0,
        "duplicates": 1,
    }
    assert data["rejected"] == [
        {"line": 5, "reason": "invalid address: An email address must have an @-sign."}
    ]
    assert data["warnings"] == [{"line": 3, "message": "duplicate of line 2; skipped"}]


@pytest.mark.usefixtures("database_url")
def test_missing_email_column_is_one_error_line_exit_1_nothing_written(cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "noemail.csv", "nom,prenom\nDupont,Hélène\n")
    result = cli("import", str(source))
    assert result.code == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Error: no email column found in the header (nom, prenom)")
    assert lines[1].startswith("Hint: ")
    assert "Traceback" not in result.stderr
    status = cli("status", "--json")  # SQLite: not even a file was made (issue 14, item 7)
    assert (status.code == 78 and "Error: no database at" in status.stderr) or json.loads(
        status.stdout)["subscribers"]["active"] == 0


@pytest.mark.usefixtures("database_url")
def test_unreadable_file_is_an_error_naming_it(cli, tmp_path: Path) -> None:
    result = cli("import", str(tmp_path / "absent.csv"))
    assert result.code == 1
    assert result.stderr.startswith("Error: cannot read ")
    assert "absent.csv" in result.stderr


@pytest.mark.usefixtures("database_url")
def test_usage_error_exits_1(cli) -> None:
    result = cli("import", "--no-such-option")
    assert result.code == 1
    assert "No such option" in result.stderr


@pytest.mark.usefixtures("database_url")
def test_subscribers_list_unsubscribe_forget(cli, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "l.csv",
        "email,name\nhelene@exemple.fr,Hélène Dupont\nmarc@exemple.fr,MARTIN Marc\n",
    )
    cli("import", str(source))
    assert cli("subscribers", "list").stdout == (
        "helene@exemple.fr\tHélène Dupont\tactive\nmarc@exemple.fr\tMarc MARTIN\tactive\n"
    )
    result = cli("subscribers", "unsubscribe", "marc@exemple.fr")
    assert result.stdout == "marc@exemple.fr unsubscribed\n"
    assert "already unsubscribed" in cli("subscribers", "unsubscribe", "marc@exemple.fr").stdout
    listed = json.loads(cli("subscribers", "list", "--status", "unsubscribed", "--json").stdout)
    assert [s["email"] for s in listed] == ["marc@exemple.fr"]
    assert cli("subscribers", "forget", "helene@exemple.fr").code == 0
    assert json.loads(cli("subscribers", "list", "--json").stdout) == listed
    missing = cli("subscribers", "unsubscribe", "helene@exemple.fr")
    assert (missing.code, missing.stderr) == (1, "Error: helene@exemple.fr is not in the list\n")


@pytest.mark.usefixtures("database_url")
def test_unsubscribe_needs_exactly_one_of_email_or_token(cli) -> None:
    assert cli("subscribers", "unsubscribe").code == 1
    assert cli("subscribers", "unsubscribe", "a@exemple.fr", "--token", "x").code == 1


@pytest.mark.usefixtures("database_url")
def test_status_json_without_campaign(cli, tmp_path: Path) -> None:
    # `status` reads: it never creates the database (issue 14, item 7); an import does
    assert cli("import", str(write_csv(tmp_path / "none.csv", "email\n"))).code == 0
    result = cli("status", "--json")
    assert json.loads(result.stdout) == {
        "subscribers": {"active": 0, "unsubscribed": 0, "bounced": 0},
        "campaigns": [],
    }
    assert "No campaign yet." in cli("status").stdout
    unknown = cli("status", "closure-notice")
    assert unknown.code == 1
    assert unknown.stderr.startswith("Error: unknown campaign 'closure-notice'")


def test_unreachable_database_exits_75(tmp_path: Path) -> None:
    env = {**os.environ, "MAILER_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/x"}
    result = subprocess.run(
        [sys.executable, "-m", "mailer", "status"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 75
    assert result.stderr.startswith("Error: database postgresql+psycopg://nobody@127.0.0.1:1/x")
    assert "Traceback" not in result.stderr


def test_bad_setting_exits_78_without_printing_secrets(tmp_path: Path) -> None:
    (tmp_path / "mailer.toml").write_text('smtp_password = "hunter2"\n')
    result = subprocess.run(
        [sys.executable, "-m", "mailer", "status"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 78
    assert result.stderr.startswith("Error: mailer.toml: smtp_password is a secret")
    assert "hunter2" not in result.stderr


@pytest.mark.usefixtures("database_url")
def test_header_only_file_imports_nothing_and_succeeds(cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "vide.csv", "email;prénom\r\n")
    result = cli("import", str(source), "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["rows"] == 0
