"""Helpers shared by the sending tests: a list of subscribers, a queued campaign, a dispatcher."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, select

from mailer import api
from mailer.core.config import Settings
from mailer.messages.campaign import load_campaign
from mailer.messages.factory import MessageFactory
from mailer.sending.dispatch import Dispatcher
from mailer.sending.options import RunOptions, Tally
from mailer.sending.policy import Backoff
from mailer.store import queueing
from mailer.store.engine import read_transaction, write_transaction
from mailer.store.models import Attempt, Delivery, Subscriber
from tests.fakes import FakeClock, MemoryTransport


def emails(n: int, prefix: str = "ok") -> list[str]:
    return [f"{prefix}{i:05d}@asso.fr" for i in range(n)]


def seed(settings: Settings, folder: Path, addresses: list[str]) -> None:
    """Import these addresses (with a French first name) through the real importer."""
    path = folder / f"list-{len(addresses)}-{abs(hash(tuple(addresses))) % 10**8}.csv"
    lines = ["email,first_name,last_name"]
    lines += [f"{a},Hélène,Dupont{i}" for i, a in enumerate(addresses)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = api.import_subscribers(settings, path)
    assert not report.rejected, report.rejected


@contextmanager
def opened(settings: Settings) -> Iterator[Engine]:
    with api.open_database(settings) as engine:
        yield engine


def queue(engine: Engine, clock: FakeClock, name: str = "closure-notice") -> queueing.CampaignRow:
    with write_transaction(engine) as connection:
        row = queueing.create_campaign(connection, name, fingerprint="f" * 64, nonce="n0nce",
                                       sender="asso@asso.fr", snapshot={}, now=clock())
        queueing.enqueue(connection, row, "asso.fr", clock())
    return row


def states(engine: Engine) -> dict[str, str]:
    """email -> delivery state."""
    with read_transaction(engine) as connection:
        return {
            row.email: row.state
            for row in connection.execute(
                select(Subscriber.email, Delivery.state).join(
                    Delivery, Delivery.subscriber_id == Subscriber.id
                )
            )
        }


def attempts_log(engine: Engine) -> list[tuple[str, str, int | None]]:
    with read_transaction(engine) as connection:
        return [
            (row.email, row.outcome, row.code)
            for row in connection.execute(
                select(Subscriber.email, Attempt.outcome, Attempt.code)
                .join(Delivery, Delivery.id == Attempt.delivery_id)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .order_by(Attempt.id)
            )
        ]


def run(
    engine: Engine,
    settings: Settings,
    row: queueing.CampaignRow,
    transport: MemoryTransport,
    clock: FakeClock,
    **options: object,
) -> Tally:
    """One dispatcher run over `row` with the memory transport."""
    campaign = load_campaign(settings, row.name)
    with write_transaction(engine) as connection:
        secret = api.token_secret(settings, connection)
    factory = MessageFactory(campaign, secret, row.nonce)
    opts = RunOptions(**{"backoff": Backoff(300, 14400, 345600), **options})  # type: ignore[arg-type]
    dispatcher = Dispatcher(engine, row.id, factory, transport, opts, clock=clock)
    return asyncio.run(dispatcher.run())
