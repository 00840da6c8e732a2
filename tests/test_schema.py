"""The database: created on first use (0600, WAL), migrated by Alembic, newer schemas refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from mailer import api
from mailer.core.config import Settings
from mailer.core.errors import SchemaError
from mailer.store.engine import SCHEMA_HEAD, ensure_schema, open_engine
from mailer.store.models import Base


def test_schema_head_constant_is_the_newest_migration() -> None:
    config = Config()
    config.set_main_option("script_location", "mailer.store:migrations")
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD


def test_first_use_creates_every_table(settings: Settings) -> None:
    api.check_database(settings)
    engine = create_engine(settings.database_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"subscribers", "campaigns", "deliveries", "attempts", "suppressions", "meta"} <= tables
    assert "alembic_version" in tables


def test_migrations_match_the_models(settings: Settings) -> None:
    """Alembic's autogenerate finds nothing to do: models and migrations agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    api.check_database(settings)
    engine = create_engine(settings.database_url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == []


def test_sqlite_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.db"
    api.check_database(Settings(database_url=f"sqlite:///{path}"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_newer_schema_is_refused_with_a_clear_error(settings: Settings) -> None:
    api.check_database(settings)
    engine = create_engine(settings.database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(SchemaError, match=r"9999.*newer"):
        api.check_database(settings)


def test_a_foreign_subscribers_table_is_not_touched(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE subscribers (id INTEGER PRIMARY KEY, x TEXT)"))
    engine.dispose()
    with pytest.raises(SchemaError, match="not made by mailer"):
        api.check_database(settings)


def test_not_a_database_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SchemaError, match="not a SQLite database"):
        api.check_database(Settings(database_url=f"sqlite:///{path}"))


def test_ensure_schema_is_idempotent(settings: Settings) -> None:
    engine = open_engine(settings.database_url)
    ensure_schema(engine)
    ensure_schema(engine)
    engine.dispose()


def test_a_database_of_the_first_release_is_upgraded_keeping_its_data(
    settings: Settings,
) -> None:
    """A list imported and sent with schema 0001 gains the bounce and purge tables on first
    use of this release; nothing already stored is lost."""
    from alembic import command

    engine = open_engine(settings.database_url)
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", "mailer.store:migrations")
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(text(
            "INSERT INTO campaigns (name, created_at, updated_at) "
            "VALUES ('closure-notice', '2026-11-01 10:00:00', '2026-11-01 10:00:00')"
        ))
    ensure_schema(engine)
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
        names = connection.execute(text("SELECT name, purged_at FROM campaigns")).all()
    engine.dispose()
    assert {"bounces", "purges"} <= tables
    assert [tuple(row) for row in names] == [("closure-notice", None)]
