"""The bulk paths store exactly what SQLAlchemy's own INSERT would, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, insert

from mailer.core.config import Settings
from mailer.store.bulk import insert_rows, values_of
from mailer.store.engine import ensure_schema, open_engine, write_transaction
from mailer.store.models import Subscriber

NOW = datetime(2026, 11, 26, 9, 30, 15, 123456, tzinfo=UTC)
TABLE: Table = Subscriber.__table__  # type: ignore[assignment]


def _row(key: str, **overrides: Any) -> dict[str, Any]:
    row = {
        "email": f"Hélène.{key}@Exemple.fr",
        "email_key": f"hélène.{key}@exemple.fr",
        "address": f"Hélène.{key}@exemple.fr",
        "smtputf8": True,
        "first_name": "Hélène",
        "last_name": None,
        "civility": "Mme",
        "attributes": {"ville": "Nîmes", "n": 3, "é": [1]},
        "status": "unsubscribed",
        "status_changed_at": NOW,
    }
    row.update(overrides)
    return row


def test_insert_rows_stores_the_same_bytes_as_a_core_insert(settings: Settings) -> None:
    engine = open_engine(settings.database_url)
    ensure_schema(engine)
    constants = {"source": "liste.csv", "created_at": NOW, "updated_at": NOW}
    with write_transaction(engine) as connection:
        insert_rows(
            connection,
            TABLE,
            [_row("bulk"), _row("bulk2", smtputf8=False)],
            constants=constants,
            skip_conflicts_on="email_key",
        )
        connection.execute(
            insert(Subscriber),
            [
                {**_row("core"), **constants},
                {**_row("core2", smtputf8=False), **constants},
            ],
        )
        # A conflicting row is skipped, not an error.
        insert_rows(
            connection,
            TABLE,
            [_row("bulk", first_name="Autre")],
            constants=constants,
            skip_conflicts_on="email_key",
        )
    with engine.connect() as connection:
        raw = connection.exec_driver_sql(
            "SELECT email_key, email, address, smtputf8, first_name, last_name, civility, "
            "attributes, status, source, created_at, updated_at, status_changed_at "
            "FROM subscribers ORDER BY id"
        ).all()
    engine.dispose()
    by_kind = {row[0].split("@")[0].split(".")[1]: row[1:] for row in raw}
    assert len(raw) == 4

    def same(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
        assert [str(x).replace("core", "K").replace("bulk", "K") for x in a] == [
            str(x).replace("core", "K").replace("bulk", "K") for x in b
        ]

    same(by_kind["bulk"], by_kind["core"])
    same(by_kind["bulk2"], by_kind["core2"])
    assert by_kind["bulk"][3] == "Hélène"


def test_values_of_feeds_an_in_lookup(settings: Settings) -> None:
    engine = open_engine(settings.database_url)
    ensure_schema(engine)
    with write_transaction(engine) as connection:
        insert_rows(
            connection,
            TABLE,
            [_row("a"), _row("b")],
            constants={"source": "x", "created_at": NOW, "updated_at": NOW},
        )
        found = connection.scalars(
            Subscriber.__table__.select()
            .with_only_columns(Subscriber.email_key)
            .where(Subscriber.email_key.in_(values_of(connection, ["hélène.b@exemple.fr", "x"])))
        ).all()
    engine.dispose()
    assert found == ["hélène.b@exemple.fr"]
