"""The delivery ledger: enqueue, claim with leases, record, release, expire (both backends)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from mailer import api
from mailer.core.config import Settings
from mailer.core.states import DeliveryState as S
from mailer.core.tokens import message_mac
from mailer.store import claims, meta, outcomes, queueing
from mailer.store.engine import open_engine, read_transaction, write_transaction
from mailer.store.models import Attempt, Delivery, Subscriber
from tests.fakes import FakeClock
from tests.sendkit import attempts_log, emails, opened, queue, seed, states

Queued = Callable[..., tuple[Engine, queueing.CampaignRow]]


@pytest.fixture
def queued(settings: Settings, tmp_path: Path, clock: FakeClock) -> Iterator[Queued]:
    """Import these addresses, open the database, queue the campaign: (engine, campaign row).
    Those `unsubscribed` leave the list before it is queued."""
    with ExitStack() as stack:

        def queue_for(
            addresses: list[str], unsubscribed: Sequence[str] = ()
        ) -> tuple[Engine, queueing.CampaignRow]:
            seed(settings, tmp_path, addresses)
            for email in unsubscribed:
                api.unsubscribe(settings, email)
            engine = stack.enter_context(opened(settings))
            return engine, queue(engine, clock)

        yield queue_for


def claim(engine, row, clock, owner="w1", limit=100, **kw):  # type: ignore[no-untyped-def]
    with write_transaction(engine) as connection:
        return claims.claim(connection, row.id, owner=owner, now=clock(), lease_seconds=600,
                            limit=limit, **kw)


def test_enqueue_is_idempotent_and_fixes_message_ids(
    settings: Settings, tmp_path: Path, clock: FakeClock, queued: Queued
) -> None:
    engine, row = queued(emails(5), unsubscribed=["ok00004@asso.fr"])
    with write_transaction(engine) as connection:
        assert queueing.enqueue(connection, row, "asso.fr", clock()) == 0
        ids = list(connection.execute(select(Delivery.subscriber_id, Delivery.message_id)))
        key = meta.secret(connection, meta.MESSAGE_ID_KEY)
    assert len(ids) == 4  # the unsubscribed one is not queued
    # each carries the MAC of its delivery: one copy does not predict another (issue 13)
    assert {m for _, m in ids} == {
        f"<n0nce.{s}.{message_mac(key, 'n0nce', s)}@asso.fr>" for s, _ in ids}
    # A subscriber imported later is queued by the next enqueue, once.
    seed(settings, tmp_path, ["late@asso.fr"])
    with write_transaction(engine) as connection:
        assert queueing.enqueue(connection, row, "asso.fr", clock()) == 1
        assert queueing.enqueue(connection, row, "asso.fr", clock()) == 0


def test_claim_leases_and_never_gives_the_same_delivery_twice(
    queued: Queued, clock: FakeClock
) -> None:
    engine, row = queued(emails(10))
    first = claim(engine, row, clock, "w1", limit=4)
    second = claim(engine, row, clock, "w2", limit=100)
    assert len(first.claimed) == 4
    assert len(second.claimed) == 6
    ids1 = {c.delivery_id for c in first.claimed}
    assert ids1.isdisjoint({c.delivery_id for c in second.claimed})
    assert all(c.origin is S.PENDING for c in first.claimed)
    assert claim(engine, row, clock, "w3").claimed == []
    with read_transaction(engine) as connection:
        leased = connection.execute(
            select(Delivery.state, Delivery.lease_owner, Delivery.lease_expires_at)
            .where(Delivery.id.in_(ids1))
        ).all()
    assert {(r.state, r.lease_owner) for r in leased} == {("sending", "w1")}
    assert all(r.lease_expires_at == clock.now + __import__("datetime").timedelta(seconds=600)
               for r in leased)


def test_record_is_compare_and_set_and_logs_attempts(
    queued: Queued, clock: FakeClock
) -> None:
    engine, row = queued(["ok@asso.fr", "gone@asso.fr", "later@asso.fr", "x@asso.fr"])
    held = {c.recipient.email: c for c in claim(engine, row, clock).claimed}
    results = [
        outcomes.Result(held["ok@asso.fr"].delivery_id, S.SENT, clock(), 250,
                        "250 queued as A"),
        outcomes.Result(held["gone@asso.fr"].delivery_id, S.FAILED, clock(), 550,
                        "550 5.1.1 no such user",
                        subscriber_id=held["gone@asso.fr"].recipient.id),
        outcomes.Result(held["later@asso.fr"].delivery_id, S.DEFERRED, clock(), 451,
                        "451 later", next_attempt_at=clock.now.replace(hour=10)),
    ]
    with write_transaction(engine) as connection:
        outcomes.record(connection, "w1", results)
        # Another worker's record for x: not its lease, nothing changes.
        outcomes.record(connection, "intruder", [
            outcomes.Result(held["x@asso.fr"].delivery_id, S.SENT, clock(), 250, "250")])
    assert states(engine) == {"ok@asso.fr": "sent", "gone@asso.fr": "failed",
                              "later@asso.fr": "deferred", "x@asso.fr": "sending"}
    assert attempts_log(engine)[:3] == [("ok@asso.fr", "sent", 250),
                                        ("gone@asso.fr", "failed", 550),
                                        ("later@asso.fr", "deferred", 451)]
    with read_transaction(engine) as connection:
        status = dict(connection.execute(select(Subscriber.email, Subscriber.status)).all())
        sent = connection.execute(select(Delivery).where(Delivery.state == "sent")).one()
    assert status["gone@asso.fr"] == "bounced"
    assert status["ok@asso.fr"] == "active"
    assert sent.attempts == 1
    assert sent.sent_at == clock.now
    assert sent.lease_owner is None
    assert sent.last_reply == "250 queued as A"
    assert sent.first_attempt_at == clock.now


def test_deferred_is_claimed_only_when_due_and_release_restores_origin(
    queued: Queued, clock: FakeClock
) -> None:
    engine, row = queued(emails(3))
    held = claim(engine, row, clock).claimed
    later = clock.now.replace(hour=10)
    with write_transaction(engine) as connection:
        outcomes.record(connection, "w1", [
            outcomes.Result(held[0].delivery_id, S.DEFERRED, clock(), 451, "451",
                            next_attempt_at=later)])
        assert claims.release(connection, "w1", [(c.delivery_id, c.origin) for c in held[1:]],
                              clock()) == 2
    assert sorted(states(engine).values()) == ["deferred", "pending", "pending"]
    assert {c.origin for c in claim(engine, row, clock, limit=10).claimed} == {S.PENDING}
    clock.advance(3600)
    again = claim(engine, row, clock, "w2", limit=10).claimed
    assert [c.origin for c in again] == [S.DEFERRED]
    assert again[0].attempts == 1  # the released ones were not charged an attempt
    with read_transaction(engine) as connection:
        assert connection.scalar(select(func.sum(Delivery.attempts))) == 1


def test_unsubscribed_after_queueing_is_skipped_when_its_turn_comes(
    queued: Queued, clock: FakeClock
) -> None:
    engine, row = queued(emails(3))
    with write_transaction(engine) as connection:
        connection.execute(Subscriber.__table__.update()
                           .where(Subscriber.email == "ok00001@asso.fr")
                           .values(status="unsubscribed"))
    result = claim(engine, row, clock)
    assert result.skipped == 1
    assert len(result.claimed) == 2
    assert states(engine)["ok00001@asso.fr"] == "skipped"


def test_expired_lease_becomes_uncertain_and_is_resent_unless_held(
    queued: Queued, clock: FakeClock
) -> None:
    engine, row = queued(emails(2))
    claim(engine, row, clock, "dead-worker")
    clock.advance(599)
    with write_transaction(engine) as connection:
        assert claims.expire_leases(connection, clock()) == 0
    clock.advance(2)
    with write_transaction(engine) as connection:
        assert claims.expire_leases(connection, clock()) == 2
    assert set(states(engine).values()) == {"uncertain"}
    assert [a[1] for a in attempts_log(engine)] == ["uncertain", "uncertain"]
    assert claim(engine, row, clock, include_uncertain=False).claimed == []
    again = claim(engine, row, clock, "w2", include_uncertain=True).claimed
    assert [c.origin for c in again] == [S.UNCERTAIN, S.UNCERTAIN]
    with read_transaction(engine) as connection:
        key = meta.secret(connection, meta.MESSAGE_ID_KEY)
    assert {c.message_id for c in again} == {
        f"<n0nce.{c.recipient.id}.{message_mac(key, 'n0nce', c.recipient.id)}@asso.fr>"
        for c in again}
    with write_transaction(engine) as connection:
        names = claims.due_campaigns(connection, clock(), include_uncertain=True)
    assert names == []  # all are held by w2 now


def test_renew_extends_only_the_owners_leases(
    queued: Queued, clock: FakeClock
) -> None:
    engine, row = queued(emails(4))
    w1 = {c.delivery_id for c in claim(engine, row, clock, "w1", limit=2).claimed}
    claim(engine, row, clock, "w2", limit=2)
    clock.advance(500)
    with write_transaction(engine) as connection:
        assert claims.renew_leases(connection, "w1", clock(), 600) == w1
    clock.advance(200)
    with write_transaction(engine) as connection:
        assert claims.expire_leases(connection, clock()) == 2
    assert sorted(states(engine).values()) == ["sending", "sending", "uncertain", "uncertain"]


@pytest.mark.parametrize("workers", [2, 4])
def test_concurrent_claimers_take_disjoint_batches(
    settings: Settings, queued: Queued, clock: FakeClock, workers: int
) -> None:
    _, row = queued(emails(400))
    taken: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        engine = open_engine(settings.database_url)
        try:
            mine = taken.setdefault(name, [])
            while True:
                got = claim(engine, row, clock, name, limit=7).claimed
                if not got:
                    return
                mine += [c.delivery_id for c in got]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    every = [d for ids in taken.values() for d in ids]
    assert len(every) == len(set(every)) == 400
    with opened(settings) as engine, read_transaction(engine) as connection:
        assert connection.scalar(select(func.count()).select_from(Attempt)) == 0
