"""The database connection: engine, SQLite pragmas and file mode, schema migrations, errors.

SQLite (the default) gets WAL, a busy timeout, foreign keys and secure_delete on every
connection, a file created 0600, and real transactions: write transactions start with
BEGIN IMMEDIATE so two processes queue for the lock instead of failing half-way.
PostgreSQL is used through psycopg 3. The schema is created and upgraded by Alembic on
first use; a database from a newer mailer is refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from mailer.core.errors import ConfigError, DatabaseError, SchemaError

SCHEMA_HEAD = "0005"  # the newest migration in mailer/store/migrations/versions (a test checks)
BUSY_TIMEOUT_MS = 30_000
_MIGRATION_LOCK = 0x6D61696C6572  # "mailer": PostgreSQL advisory lock for migrations


def describe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.query.get("uri") == "true":  # sqlite:///file:PATH?mode=ro&uri=true
        return Path(parsed.database.removeprefix("file:"))
    return Path(parsed.database)


def _require_existing(url: str, path: Path) -> None:
    """Commands that only read never create a database (nor its folder): a wrong
    MAILER_DATABASE_URL, or a relative one run from another directory, is said as such."""
    if path.exists():
        return
    raise ConfigError(
        f"no database at {path.absolute()}",
        hint=f"MAILER_DATABASE_URL is {describe(url)} (a relative path starts from the current "
        "directory); point it at your database, or `mailer import FILE.csv` to create one",
    )


def _create_private_file(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does (it would use the umask)."""
    if path.exists():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create the database {path}: {exc.strerror}") from exc


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control from the sqlite3 module: SQLAlchemy's "begin" event below
    # emits BEGIN itself (the recipe in SQLAlchemy's SQLite documentation).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
        "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = NORMAL",
        "PRAGMA foreign_keys = ON",
        "PRAGMA secure_delete = ON",
    ):
        cursor.execute(pragma)
    cursor.close()


LOCK_TIMEOUT_MS = BUSY_TIMEOUT_MS  # PostgreSQL: the same patience as SQLite's busy timeout


def _on_postgresql_connect(dbapi_connection: Any, _record: Any) -> None:
    # Without it a statement waits forever on a row another process holds (a worker paused
    # mid-transaction, say); with it, the wait ends as "stayed locked" (exit 75).
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
    dbapi_connection.commit()


def _on_sqlite_begin(connection: Connection) -> None:
    mode = "IMMEDIATE" if connection.get_execution_options().get("write") else "DEFERRED"
    connection.exec_driver_sql(f"BEGIN {mode}")


def open_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for `url`, with mailer's settings for its backend; without `create`, a
    SQLite file that does not exist is a ConfigError instead of a new empty database."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            "MAILER_DATABASE_URL is not a valid SQLAlchemy URL",
            hint="for example sqlite:///subscribers.db or postgresql+psycopg://user@host/db",
        ) from exc
    backend = parsed.get_backend_name()
    options: dict[str, Any] = {}
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if backend == "postgresql":
        # prepare_threshold=None: no server-side prepared statements. psycopg prepares a
        # statement after five runs and PostgreSQL may then keep a generic plan made while
        # the table was small: an import's lookups turned into full scans and 1,000,000 rows
        # took twice as long (benchmarks/README.md). Planning each batch's few statements
        # afresh costs well under a millisecond.
        options.update(
            pool_pre_ping=True, connect_args={"connect_timeout": 10, "prepare_threshold": None}
        )
    path = _sqlite_path(url)
    if path is not None and not create:
        _require_existing(url, path)
    elif path is not None and parsed.query.get("uri") != "true":
        _create_private_file(path)
    try:
        engine = create_engine(parsed, **options)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(
            f"no driver for the database {describe(url)}",
            hint="for PostgreSQL: pip install 'mailer[postgres]' and use postgresql+psycopg://",
        ) from exc
    event.listen(engine, "handle_error", _translate_database_error)
    if backend == "sqlite":
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
    elif backend == "postgresql":
        event.listen(engine, "connect", _on_postgresql_connect)
    return engine


@contextmanager
def database(url: str, *, create: bool = True) -> Iterator[Engine]:
    """The engine for `url`, schema created or upgraded, disposed of at the end; without
    `create`, a SQLite file that does not exist is a ConfigError (see open_engine)."""
    engine = open_engine(url, create=create)
    try:
        ensure_schema(engine)
        yield engine
    finally:
        engine.dispose()


def _translate_database_error(context: ExceptionContext) -> None:
    """The one place SQLAlchemy's failures become mailer's errors (an engine `handle_error`
    hook, so no call site wraps its statements by hand): an unreachable, locked or broken
    database is temporary (exit 75), a file that is not a database is a schema problem (78).
    Integrity and programming errors are bugs: they go through untouched and crash loudly."""
    exc = context.sqlalchemy_exception
    if not isinstance(exc, sqlalchemy.exc.DatabaseError):
        return
    engine = context.engine
    where = engine.url.render_as_string(hide_password=True) if engine is not None else "?"
    dialect = engine.dialect.name if engine is not None else ""
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    if dialect == "sqlite" and "not a database" in detail:
        raise SchemaError(f"{where} is not a SQLite database ({detail})") from exc
    if dialect == "sqlite" and ("readonly database" in detail or "unable to open" in detail):
        # Permissions do not fix themselves: not "try again later" (75), which cron would
        # retry forever, but a configuration problem (78).
        raise ConfigError(
            f"the database {where} is read-only or cannot be opened ({detail})",
            hint="mailer needs write permission on the database file and on its folder "
            "(SQLite writes its -wal and -shm files beside it); check the owner and modes",
        ) from exc
    if not isinstance(exc, OperationalError):
        return
    locked = getattr(exc.orig, "sqlstate", None) == "55P03"  # PostgreSQL lock_timeout
    if (dialect == "sqlite" and "locked" in detail) or locked:
        raise DatabaseError(
            f"the database {where} stayed locked for {BUSY_TIMEOUT_MS // 1000} s",
            hint="another mailer is writing to it; run again when it is done",
        ) from exc
    raise DatabaseError(f"database {where}: {detail}") from exc


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that writes: BEGIN IMMEDIATE on SQLite; commits on success."""
    with engine.connect() as connection:
        connection = connection.execution_options(write=True)
        with connection.begin():
            yield connection


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection, connection.begin():
        yield connection


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "mailer.store:migrations")
    config.attributes["connection"] = connection
    return config


def _current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def ensure_schema(engine: Engine) -> None:
    """Create or upgrade the schema to SCHEMA_HEAD; refuse a database from a newer mailer."""
    with read_transaction(engine) as connection:
        if _current_revision(connection) == SCHEMA_HEAD:
            return
    with write_transaction(engine) as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
            )
        current = _current_revision(connection)
        if current == SCHEMA_HEAD:
            return
        _upgrade(connection, current)


def _upgrade(connection: Connection, current: str | None) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory

    config = _alembic_config(connection)
    known = {rev.revision for rev in ScriptDirectory.from_config(config).walk_revisions()}
    where = connection.engine.url.render_as_string(hide_password=True)
    if current is not None and current not in known:
        raise SchemaError(
            f"the database {where} has schema revision {current}, newer than this mailer knows",
            hint="upgrade mailer (pip install -U mailer) before using this database",
        )
    if current is None and "subscribers" in inspect(connection).get_table_names():
        raise SchemaError(f"the database {where} has a subscribers table not made by mailer")
    command.upgrade(config, "head")


def dialect_insert(connection: Connection) -> Any:
    """The backend's INSERT construct (it has on_conflict_do_nothing / do_update)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert


PERSONAL_TABLES = ("subscribers", "deliveries", "attempts", "bounces")


def scrub(engine: Engine, *, rewrite: bool) -> None:
    """After personal data was deleted: make sure none of it stays readable in the files.

    SQLite deletes with secure_delete (freed cells are zeroed); with `rewrite`, VACUUM also
    rebuilds the file from the live rows alone. The TRUNCATE checkpoint then copies every
    page into the main file and empties the WAL, where the old pages would still be.
    On PostgreSQL, `rewrite` runs VACUUM FULL on the tables that hold personal data, which
    writes them anew; the server's own WAL and backups are its administrator's to manage.
    """
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            # Straight on the driver's connection: SQLAlchemy would wrap it in a BEGIN, and
            # VACUUM cannot run in a transaction.
            driver = connection.connection.driver_connection
            assert driver is not None
            if rewrite:
                driver.execute("VACUUM")
            driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        elif engine.dialect.name == "postgresql" and rewrite:
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                f"VACUUM FULL {', '.join(PERSONAL_TABLES)}"
            )
