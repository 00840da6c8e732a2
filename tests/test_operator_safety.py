"""Issue 14, items 7, 8, 16, 17: no database made behind the user's back, a read-only database
is a configuration problem, weak secrets and passwords in files refused, strict addresses."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from mailer import api
from mailer.bounces.dsn._decoding import addresses
from mailer.core import strictaddr
from mailer.core.config import Settings, load_settings
from mailer.core.errors import EX_CONFIG, ConfigError, MailerError, NotFoundError
from mailer.store.engine import open_engine

# --- 16: secrets -----------------------------------------------------------------------------


def test_a_short_token_secret_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        load_settings(environ={"MAILER_SECRET": "a"})
    assert load_settings(environ={"MAILER_SECRET": "x" * 16}).secret == "x" * 16


def test_a_database_password_in_mailer_toml_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mailer.toml").write_text(
        'database_url = "postgresql+psycopg://mailer:hunter2@db.example/mailer"\n'
    )
    with pytest.raises(ConfigError, match="holds a password") as caught:
        load_settings(environ={})
    assert "hunter2" not in caught.value.message + (caught.value.hint or "")
    assert "MAILER_DATABASE_URL" in (caught.value.hint or "")
    # without a password the file is fine, and the environment may carry one
    (tmp_path / "mailer.toml").write_text(
        'database_url = "postgresql+psycopg://mailer@db.example/mailer"\n'
    )
    assert load_settings(environ={}).database_url.endswith("@db.example/mailer")
    url = "postgresql+psycopg://mailer:pw@db.example/mailer"
    assert load_settings(environ={"MAILER_DATABASE_URL": url}).database_url == url


# --- 17: strict address parsing ------------------------------------------------------------


@pytest.mark.parametrize("strict_stdlib", [True, False])
def test_a_crafted_address_header_yields_no_address(
    strict_stdlib: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if strict_stdlib and not strictaddr.STRICT_IN_STDLIB:
        pytest.skip("this Python has no strict mode: the fallback is tested")
    monkeypatch.setattr(strictaddr, "STRICT_IN_STDLIB", strict_stdlib)
    # CVE-2023-27043: the unfixed parser reads two addresses, one the sender never wrote
    assert addresses(["alice@example.org)<bob@example.org>"]) == []
    assert addresses(["a@example.org(<b@example.org>"]) == []
    assert addresses(['"x, y" <c@example.org>, d@example.org']) == [
        "c@example.org", "d@example.org"
    ]


# --- 7: read-only commands make no database ------------------------------------------------


def _settings(tmp_path: Path, name: str = "missing/sub.db") -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / name}",
                    templates_dir=Path(__file__).parents[1] / "templates")


@pytest.mark.parametrize("action", ["status", "report", "preview", "list", "check", "serve"])
def test_read_only_commands_create_no_database(tmp_path: Path, action: str) -> None:
    settings = _settings(tmp_path)
    calls = {
        "status": lambda: api.status(settings),
        "report": lambda: list(api.report(settings, "closure-notice")),
        "preview": lambda: api.preview(settings, "closure-notice"),
        "list": lambda: list(api.list_subscribers(settings)),
        "check": lambda: api.check_campaign(settings, "closure-notice"),
        "serve": lambda: api.serve(settings, "127.0.0.1", 0),  # refuses before listening
    }
    with pytest.raises(ConfigError) as caught:
        calls[action]()
    assert str(tmp_path / "missing" / "sub.db") in caught.value.message
    assert "MAILER_DATABASE_URL" in (caught.value.hint or "")
    assert not (tmp_path / "missing").exists()


def test_an_unknown_campaign_names_the_folder_and_the_variable(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}",
                        templates_dir=tmp_path / "tpl")
    with pytest.raises(NotFoundError) as caught:
        api.preview(settings, "nope")
    said = caught.value.message + (caught.value.hint or "")
    assert "MAILER_TEMPLATES_DIR" in said
    assert str(tmp_path / "tpl") in said


# --- 8: a read-only database is a configuration problem (78), not "try again" (75) ----------


def _made(tmp_path: Path) -> Path:
    path = tmp_path / "made.db"
    api.check_database(Settings(database_url=f"sqlite:///{path}"))
    return path


def test_sqlite_readonly_errors_exit_78_with_a_hint(tmp_path: Path) -> None:
    # Meaningful as root too: SQLite's own read-only mode refuses the write, whatever the
    # file modes say; the translation is what is tested.
    path = _made(tmp_path)
    engine = open_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        with pytest.raises(MailerError) as caught, engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (x INTEGER)"))
    finally:
        engine.dispose()
    assert caught.value.exit_code == EX_CONFIG
    assert "read-only" in caught.value.message
    assert "permission" in (caught.value.hint or "")


def test_a_write_to_a_read_only_database_exits_78_from_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mailer.cli import main

    path = _made(tmp_path)
    (tmp_path / "l.csv").write_text("email\na@exemple.fr\n", encoding="utf-8")
    monkeypatch.setenv("MAILER_DATABASE_URL", f"sqlite:///file:{path}?mode=ro&uri=true")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["import", "l.csv"])
    assert exited.value.code == EX_CONFIG  # not 75: cron must not retry it forever
    said = capsys.readouterr().err
    assert "read-only" in said
    assert "Hint: mailer needs write permission" in said


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes whatever the file modes say")
def test_a_read_only_database_file_exits_78(tmp_path: Path) -> None:
    path = _made(tmp_path)
    path.chmod(0o400)
    with pytest.raises(MailerError) as caught:
        api.forget(Settings(database_url=f"sqlite:///{path}"), "x@example.org")
    assert caught.value.exit_code == EX_CONFIG


def test_sqlite_itself_reports_readonly(tmp_path: Path) -> None:
    """The message the translation keys on is SQLite's own (guards a future wording)."""
    path = _made(tmp_path)
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly database"):
        connection.execute("CREATE TABLE t (x INTEGER)")
    connection.close()
