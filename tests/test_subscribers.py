"""Unsubscribe, forget (real erasure), tokens, and status counts, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, select

from mailer import api
from mailer.core.config import Settings
from mailer.core.errors import InputError, NotFoundError
from mailer.core.states import DeliveryState
from mailer.core.tokens import make_token
from mailer.store import meta
from mailer.store.models import Attempt, Campaign, Delivery, Subscriber
from tests.conftest import write_csv

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


@pytest.fixture
def imported(settings: Settings, tmp_path: Path) -> Settings:
    source = write_csv(
        tmp_path / "list.csv",
        "email,first_name,last_name\n"
        "helene@exemple.fr,Hélène,Dupont\n"
        "marc@exemple.fr,Marc,Martin\n"
        "zoe@bücher.de,Zoë,Müller\n",
    )
    api.import_subscribers(settings, source)
    return settings


def _queue(settings: Settings, email_key: str, state: DeliveryState) -> None:
    """Put one delivery (and one attempt) in the ledger for this subscriber."""
    engine = create_engine(settings.database_url)
    with engine.begin() as connection:
        campaign_id = connection.scalar(select(Campaign.id).where(Campaign.name == "c"))
        if campaign_id is None:
            campaign_id = connection.execute(
                insert(Campaign).values(name="c", created_at=NOW, updated_at=NOW)
            ).inserted_primary_key[0]
        subscriber_id = connection.scalar(
            select(Subscriber.id).where(Subscriber.email_key == email_key)
        )
        delivery_id = connection.execute(
            insert(Delivery).values(
                campaign_id=campaign_id,
                subscriber_id=subscriber_id,
                state=state.value,
                attempts=1,
                message_id=f"<{email_key}.c@exemple.fr>",
                last_reply=f"250 ok for <{email_key}>",
                created_at=NOW,
                updated_at=NOW,
            )
        ).inserted_primary_key[0]
        connection.execute(
            insert(Attempt).values(
                delivery_id=delivery_id,
                at=NOW,
                worker="w",
                outcome="deferred",
                code=451,
                reply=f"451 try later <{email_key}>",
            )
        )
    engine.dispose()


def _states(settings: Settings) -> dict[str, str]:
    engine = create_engine(settings.database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            select(Subscriber.email_key, Delivery.state).join(
                Delivery, Delivery.subscriber_id == Subscriber.id
            )
        )
        result = {row[0]: row[1] for row in rows}
    engine.dispose()
    return result


def test_unsubscribe_by_address_skips_pending_deliveries(imported: Settings) -> None:
    _queue(imported, "helene@exemple.fr", DeliveryState.PENDING)
    _queue(imported, "marc@exemple.fr", DeliveryState.SENT)
    change = api.unsubscribe(imported, "  Helene@EXEMPLE.fr ")
    assert change.changed
    assert change.status == "unsubscribed"
    assert _states(imported) == {"helene@exemple.fr": "skipped", "marc@exemple.fr": "sent"}
    again = api.unsubscribe(imported, "helene@exemple.fr")
    assert not again.changed


def test_unsubscribed_person_is_not_resubscribed_by_reimport(
    imported: Settings, tmp_path: Path
) -> None:
    api.unsubscribe(imported, "helene@exemple.fr")
    source = write_csv(tmp_path / "again.csv", "email,first_name\nhelene@exemple.fr,Hélène\n")
    report = api.import_subscribers(imported, source)
    assert report.unchanged == 1
    statuses = {row["email"]: row["status"] for row in api.list_subscribers(imported)}
    assert statuses["helene@exemple.fr"] == "unsubscribed"


def test_unsubscribe_unknown_address_is_not_found(imported: Settings) -> None:
    with pytest.raises(NotFoundError):
        api.unsubscribe(imported, "nobody@exemple.fr")
    with pytest.raises(InputError):
        api.unsubscribe(imported, "not an address")


def test_unsubscribe_by_token(imported: Settings) -> None:
    engine = create_engine(imported.database_url)
    with engine.begin() as connection:
        row = connection.execute(
            select(Subscriber.id, Subscriber.email_key).where(
                Subscriber.email_key == "marc@exemple.fr"
            )
        ).one()
        secret = meta.secret(connection, meta.TOKEN_SECRET)
    engine.dispose()
    token = make_token(secret, row.id, row.email_key)
    assert "marc" not in token
    with pytest.raises(NotFoundError):
        api.unsubscribe(imported, token=token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
    assert api.unsubscribe(imported, token=token).email == "marc@exemple.fr"


def test_token_uses_mailer_secret_when_set(imported: Settings) -> None:
    settings = Settings(database_url=imported.database_url, secret="from-the-environment")
    engine = create_engine(imported.database_url)
    with engine.connect() as connection:
        row = connection.execute(
            select(Subscriber.id, Subscriber.email_key).where(
                Subscriber.email_key == "marc@exemple.fr"
            )
        ).one()
    engine.dispose()
    token = make_token(b"from-the-environment", row.id, row.email_key)
    with pytest.raises(NotFoundError):
        api.unsubscribe(imported, token=token)  # the database's own secret does not match
    assert api.unsubscribe(settings, token=token).changed


def test_forget_erases_every_row_and_blocks_reimport(imported: Settings, tmp_path: Path) -> None:
    _queue(imported, "zoe@xn--bcher-kva.de", DeliveryState.DEFERRED)
    erasure = api.forget(imported, "Zoë@bücher.de".replace("Zoë", "zoe"))
    assert erasure.was_subscriber
    emails = [row["email"] for row in api.list_subscribers(imported)]
    assert emails == ["helene@exemple.fr", "marc@exemple.fr"]
    assert _states(imported) == {}
    engine = create_engine(imported.database_url)
    with engine.connect() as connection:
        assert connection.scalar(select(Attempt.id)) is None
    engine.dispose()

    source = write_csv(tmp_path / "again.csv", "email\nZOE@bücher.de\nnew@exemple.fr\n")
    report = api.import_subscribers(imported, source)
    assert report.imported == 1
    assert [(r.line, r.reason) for r in report.rejected] == [
        (2, "address erased on request (forget); not imported again")
    ]


def test_forget_an_unknown_address_still_blocks_it(imported: Settings, tmp_path: Path) -> None:
    assert not api.forget(imported, "later@exemple.fr").was_subscriber
    source = write_csv(tmp_path / "later.csv", "email\nlater@exemple.fr\n")
    assert api.import_subscribers(imported, source).imported == 0


def test_forget_leaves_no_trace_in_the_sqlite_file_bytes(tmp_path: Path) -> None:
    database = tmp_path / "subscribers.db"
    settings = Settings(database_url=f"sqlite:///{database}")
    rows = "".join(f"person{i}@exemple.fr,Prénom{i}\n" for i in range(300))
    source = write_csv(
        tmp_path / "list.csv", "email,first_name\nsecret.person@exemple.fr,Unforgettable\n" + rows
    )
    api.import_subscribers(settings, source)
    _queue(settings, "secret.person@exemple.fr", DeliveryState.SENT)
    api.forget(settings, "secret.person@exemple.fr")
    files = [p for p in tmp_path.iterdir() if p.name.startswith("subscribers.db")]
    data = b"".join(p.read_bytes() for p in files)
    assert b"person1@exemple.fr" in data  # the others are still there
    assert b"secret.person" not in data
    assert b"Unforgettable" not in data


def test_status_counts_subscribers_by_status(imported: Settings) -> None:
    api.unsubscribe(imported, "marc@exemple.fr")
    assert api.status(imported) == {
        "subscribers": {"active": 2, "unsubscribed": 1, "bounced": 0},
        "campaigns": [],
    }


def test_status_of_a_campaign_has_every_state_key(imported: Settings) -> None:
    _queue(imported, "helene@exemple.fr", DeliveryState.SENT)
    _queue(imported, "marc@exemple.fr", DeliveryState.PENDING)
    data = api.status(imported, "c")
    assert data == {
        "campaign": "c",
        "total": 2,
        "counts": {
            "pending": 1,
            "sending": 0,
            "sent": 1,
            "deferred": 0,
            "uncertain": 0,
            "failed": 0,
            "skipped": 0,
        },
        "next_attempt_at": None,
    }
    assert json.loads(json.dumps(api.status(imported)))["campaigns"] == [data]
    with pytest.raises(NotFoundError):
        api.status(imported, "unknown")
