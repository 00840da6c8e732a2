"""The unsubscribe page's database side: one engine, the token check, the status change.

Synchronous: the app calls it through `gate`, in threads of its own. Database errors come out
as MailerErrors, which the app shows as its 503 page. The server's engine waits for another
process's write lock only `lock_wait` seconds, not the 30 s a command waits: a page that
cannot be answered soon is a 503 the client retries, not a request holding its connection.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sqlalchemy import Engine, event

from mailer.core.clock import Clock
from mailer.core.config import Settings
from mailer.core.errors import DatabaseError, MailerError
from mailer.core.states import SubscriberStatus
from mailer.core.tokens import token_subscriber_id, verify_token
from mailer.store import meta
from mailer.store import subscribers as store
from mailer.store.engine import (
    describe,
    ensure_schema,
    open_engine,
    read_transaction,
    write_transaction,
)

log = logging.getLogger("mailer.web")

_DATABASE_RETRY_SECONDS = 2.0  # while the database is down, at most one attempt this often


class Database:
    """One engine for the server's life, the schema ensured once, the token key read once.

    `open()` is cheap once it has succeeded. While the database is down it raises
    DatabaseError, trying again at most every couple of seconds, so an outage is a 503 per
    request and the server recovers by itself when the database comes back.
    """

    def __init__(self, settings: Settings, *, lock_wait: float = 5.0) -> None:
        self._settings = settings
        self._lock_wait_ms = max(1, round(lock_wait * 1000))
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._secret: bytes | None = None
        self._failed_at = 0.0
        self._failure: MailerError | None = None

    def open(self) -> tuple[Engine, bytes]:
        engine, secret = self._engine, self._secret
        if engine is not None and secret is not None:
            return engine, secret
        with self._lock:
            if self._engine is None:
                self._engine = open_engine(  # ConfigError: fatal
                    self._settings.database_url, create=False
                )
                # After the engine's own "connect" listener, which sets the commands' 30 s.
                event.listen(self._engine, "connect", self._shorten_lock_wait)
            if self._secret is None:
                recent = time.monotonic() - self._failed_at < _DATABASE_RETRY_SECONDS
                if self._failure is not None and recent:
                    raise DatabaseError(self._failure.message, hint=self._failure.hint)
                try:
                    ensure_schema(self._engine)
                    # Generated on first use (a send would have made it already); the key
                    # never changes while the server runs.
                    with write_transaction(self._engine) as connection:
                        self._secret = meta.token_secret(connection, self._settings.secret)
                except DatabaseError as exc:
                    self._failed_at, self._failure = time.monotonic(), exc
                    raise
                self._failure = None
            return self._engine, self._secret

    def _shorten_lock_wait(self, dbapi_connection: Any, _record: Any) -> None:
        assert self._engine is not None
        if self._engine.dialect.name == "sqlite":
            dbapi_connection.execute(f"PRAGMA busy_timeout = {self._lock_wait_ms}")
        elif self._engine.dialect.name == "postgresql":
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f"SET lock_timeout = {self._lock_wait_ms}")
            dbapi_connection.commit()

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
            self._engine, self._secret = None, None

    @property
    def where(self) -> str:
        return describe(self._settings.database_url)


def waits_for_lock(exc: MailerError) -> bool:
    """Whether `exc` is the lock wait running out (another process is writing), as opposed
    to a database that is down: the same causes the store's translation recognises."""
    cause = exc.__cause__
    if not isinstance(exc, DatabaseError) or cause is None:
        return False
    # The driver's error, as such or inside SQLAlchemy's (which path depends on where it hit).
    for error in (cause, getattr(cause, "orig", None)):
        if getattr(error, "sqlstate", None) == "55P03":  # PostgreSQL lock_timeout
            return True
        if error is not None and "database is locked" in str(error):  # SQLite busy_timeout
            return True
    return False


@dataclass(frozen=True)
class Found:
    """The subscriber a genuine token names, as the pages need them."""

    subscriber_id: int
    email: str
    status: str


class Outcome(Enum):
    UNSUBSCRIBED = "unsubscribed"
    ALREADY = "already"


class Service:
    """The two things the pages do with the database: look a token up, unsubscribe."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self.database = database
        self.clock = clock

    def find(self, token: str) -> Found | None:
        """The subscriber a genuine token names, or None (malformed, forged, unknown, erased)."""
        subscriber_id = token_subscriber_id(token)
        if subscriber_id is None:
            return None
        engine, secret = self.database.open()
        with read_transaction(engine) as connection:
            row = store.get(connection, subscriber_id)
        if row is None or not verify_token(secret, token, row.id, row.email_key):
            return None
        return Found(int(row.id), str(row.email), str(row.status))

    def unsubscribe(self, token: str) -> tuple[Found, Outcome] | None:
        """Unsubscribe the token's subscriber (skipping what they had pending); idempotent."""
        found = self.find(token)  # a read first: a forged token never takes the write lock
        if found is None:
            return None
        if found.status != SubscriberStatus.ACTIVE.value:
            return found, Outcome.ALREADY
        engine, secret = self.database.open()
        with write_transaction(engine) as connection:
            row = store.get(connection, found.subscriber_id)
            if row is None or not verify_token(secret, token, row.id, row.email_key):
                return None  # erased in between
            changed = store.set_status(
                connection, row.email_key, SubscriberStatus.UNSUBSCRIBED, self.clock()
            )
        if changed is None:
            return found, Outcome.ALREADY
        log.info("subscriber #%d unsubscribed (one-click)", found.subscriber_id)
        return found, Outcome.UNSUBSCRIBED
