"""Shared fixtures: a real database on each backend, settings, and the CLI run in-process.

Every test that takes `database_url` runs twice: on a SQLite file, and on the PostgreSQL
server named by MAILER_TEST_POSTGRES_URL (each test in a schema of its own, dropped after).
Without that variable the PostgreSQL runs are skipped, with the reason shown by `-ra`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text

from mailer.cli import main
from mailer.core.config import Settings
from tests.fakes import FakeClock

# The scripted SMTP server and the private dovecot IMAP server fixtures.
pytest_plugins = ["tests.smtpserver", "tests.imapserver"]

POSTGRES_URL = os.environ.get("MAILER_TEST_POSTGRES_URL", "")
FIXTURES = Path(__file__).parent / "fixtures"
NO_POSTGRES = (
    "PostgreSQL tests need MAILER_TEST_POSTGRES_URL, e.g. "
    "postgresql+psycopg://postgres@127.0.0.1:5432/test (CI always sets it)"
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL to a fresh, empty schema on the test PostgreSQL server."""
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'subscribers.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, templates_dir=tmp_path / "templates")


@pytest.fixture
def clock() -> FakeClock:
    """A clock that stays at 2026-11-25 09:00 UTC until the test moves it."""
    return FakeClock()


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> object:
    """Run `mailer ARGS...` in-process in tmp_path, against `database_url`."""
    for name in list(os.environ):
        if name.startswith("MAILER_") and name != "MAILER_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("MAILER_DATABASE_URL", database_url)
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def write_csv(path: Path, text_: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text_.encode(encoding))
    return path


REPO_TEMPLATES = Path(__file__).parent.parent / "templates"


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A copy of the project's templates folder (closure-notice and _layout) to edit freely."""
    import shutil

    target = tmp_path / "templates"
    shutil.copytree(REPO_TEMPLATES, target)
    return target


def write_campaign(templates_dir: Path, name: str, files: dict[str, str]) -> Path:
    """A campaign folder with the given files (campaign.toml defaults to a plain sender)."""
    folder = templates_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    files = {"campaign.toml": 'from = "Asso <asso@asso.fr>"\n', **files}
    for file, content in files.items():
        (folder / file).write_text(content, encoding="utf-8")
    return folder
