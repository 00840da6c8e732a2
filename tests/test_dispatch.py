"""The sending loop against the memory transport and a real database (both backends)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailer.core.config import Rate, Settings
from mailer.core.delivery import Reply, Stage
from mailer.core.errors import ConfigError, RelayTemporaryError
from mailer.store.engine import read_transaction
from mailer.store.models import Delivery, Subscriber
from tests.fakes import ACCEPT, FakeClock, MemoryTransport, by_local_part
from tests.sendkit import attempts_log, emails, opened, queue, run, seed, states


@pytest.fixture
def ready(settings: Settings, templates: Path, tmp_path: Path) -> Settings:
    return settings


def test_every_active_subscriber_gets_one_message(
    ready: Settings, tmp_path: Path, clock: FakeClock
) -> None:
    seed(ready, tmp_path, emails(25))
    transport = MemoryTransport(delay=0.001)
    with opened(ready) as engine:
        row = queue(engine, clock)
        tally = run(engine, ready, row, transport, clock, concurrency=4, batch_size=7)
        assert (tally.sent, tally.deferred, tally.failed) == (25, 0, 0)
        assert set(states(engine).values()) == {"sent"}
        assert transport.copies() == dict.fromkeys(emails(25), 1)
        assert 1 < transport.max_in_flight <= 4
        assert transport.started == 1
        assert transport.closed == 1
        with read_transaction(engine) as connection:
            ids = dict(
                connection.execute(select(Delivery.subscriber_id, Delivery.message_id)).all()
            )
            sub = dict(connection.execute(select(Subscriber.address, Subscriber.id)).all())
        for submission in transport.received:
            assert submission.message_id == ids[sub[submission.recipient]]
            assert f"Message-ID: {submission.message_id}".encode() in submission.data
            assert submission.sender == "contact@cime.example.org"
        # Running again finds nothing to send.
        again = MemoryTransport()
        assert run(engine, ready, row, again, clock).sent == 0
        assert again.received == []


def test_replies_become_states_and_temporary_ones_are_retried(
    ready: Settings, tmp_path: Path, clock: FakeClock
) -> None:
    seed(ready, tmp_path, ["ok@asso.fr", "temp@asso.fr", "gone@asso.fr", "drop@asso.fr",
                           "full@asso.fr"])
    script = by_local_part({
        "temp": [Reply(451, "4.3.0 try later", Stage.RCPT), ACCEPT],
        "gone": [Reply(550, "5.1.1 no such user", Stage.RCPT)],
        "drop": [Reply(None, "connection lost", Stage.DATA_END)],
        "full": [Reply(552, "5.2.2 mailbox full", Stage.RCPT), ACCEPT],
    })
    transport = MemoryTransport(script)
    with opened(ready) as engine:
        row = queue(engine, clock)
        tally = run(engine, ready, row, transport, clock)
        assert (tally.sent, tally.deferred, tally.failed, tally.uncertain) == (1, 2, 1, 1)
        assert states(engine) == {"ok@asso.fr": "sent", "temp@asso.fr": "deferred",
                                  "gone@asso.fr": "failed", "drop@asso.fr": "uncertain",
                                  "full@asso.fr": "deferred"}
        with read_transaction(engine) as connection:
            gone = connection.execute(
                select(Subscriber.status).where(Subscriber.email == "gone@asso.fr")).scalar()
            failed = connection.execute(
                select(Delivery.last_code, Delivery.last_reply).where(Delivery.state == "failed")
            ).one()
        assert gone == "bounced"
        assert failed == (550, "550 5.1.1 no such user")
        # Not yet due: nothing but the uncertain one is sent again.
        clock.advance(60)
        tally = run(engine, ready, row, transport, clock, include_uncertain=False)
        assert tally.done == 0
        clock.advance(300)
        tally = run(engine, ready, row, transport, clock)
        assert (tally.sent, tally.uncertain) == (2, 1)
        assert states(engine)["temp@asso.fr"] == "sent"
        log = attempts_log(engine)
        assert [entry for entry in log if entry[0] == "temp@asso.fr"] == [
            ("temp@asso.fr", "deferred", 451), ("temp@asso.fr", "sent", 250)]


def test_a_421_requeues_without_charging_an_attempt(
    ready: Settings, tmp_path: Path, clock: FakeClock
) -> None:
    seed(ready, tmp_path, ["busy@asso.fr", "ok@asso.fr"])
    script = by_local_part({"busy": [Reply(421, "4.7.0 try again", Stage.RCPT), ACCEPT]})
    transport = MemoryTransport(script)
    with opened(ready) as engine:
        row = queue(engine, clock)
        tally = run(engine, ready, row, transport, clock, throttle_pause=0.01)
        assert (tally.sent, tally.requeued) == (2, 1)
        assert [e[1] for e in attempts_log(engine) if e[0] == "busy@asso.fr"] == ["sent"]


def test_repeated_throttling_stops_the_run_and_marks_nobody(
    ready: Settings, tmp_path: Path, clock: FakeClock
) -> None:
    seed(ready, tmp_path, emails(30, "busy"))
    transport = MemoryTransport(by_local_part({"busy": [Reply(421, "4.7.0 slow down",
                                                              Stage.MAIL)]}))
    with opened(ready) as engine:
        row = queue(engine, clock)
        with pytest.raises(RelayTemporaryError, match="keeps throttling"):
            run(engine, ready, row, transport, clock, throttle_pause=0.01)
        assert set(states(engine).values()) == {"pending"}
        # The attempts log keeps the relay's words for the one that stopped the run, as
        # "returned": no attempt was counted against anybody (deliveries.attempts stays 0).
        assert {outcome for _email, outcome, _code in attempts_log(engine)} <= {"returned"}
        with read_transaction(engine) as connection:
            assert connection.scalar(select(func.max(Delivery.attempts))) == 0


@pytest.mark.parametrize("error", [
    RelayTemporaryError("cannot connect to the relay 127.0.0.1:9: connection refused"),
    ConfigError("the relay refused the credentials"),
])
def test_whole_run_trouble_releases_everything_and_marks_nobody(
    ready: Settings, tmp_path: Path, clock: FakeClock, error: Exception
) -> None:
    seed(ready, tmp_path, emails(40))
    with opened(ready) as engine:
        row = queue(engine, clock)
        with pytest.raises(type(error)):
            run(engine, ready, row, MemoryTransport(fail_start=error), clock)  # type: ignore[arg-type]
        assert set(states(engine).values()) == {"pending"}
        # Lost mid-run: what was answered is recorded, the rest is released.
        transport = MemoryTransport(fail_after=10, fail_with=error, delay=0.001)  # type: ignore[arg-type]
        with pytest.raises(type(error)):
            run(engine, ready, row, transport, clock, concurrency=2)
        counts = list(states(engine).values())
        assert counts.count("sent") == 10
        assert counts.count("pending") == 30
        assert {e[1] for e in attempts_log(engine)} == {"sent"}


def test_stop_lets_in_flight_messages_finish_and_releases_the_rest(
    ready: Settings, tmp_path: Path, clock: FakeClock
) -> None:
    from mailer.messages.campaign import load_campaign
    from mailer.messages.factory import MessageFactory
    from mailer.sending.dispatch import Dispatcher
    from mailer.sending.options import RunOptions

    seed(ready, tmp_path, emails(60))
    transport = MemoryTransport(delay=0.02)
    with opened(ready) as engine:
        row = queue(engine, clock)
        factory = MessageFactory(load_campaign(ready, row.name), b"k" * 32, row.nonce)
        dispatcher = Dispatcher(engine, row.id, factory, transport,
                                RunOptions(concurrency=3, batch_size=20), clock=clock)

        async def main() -> None:
            task = asyncio.create_task(dispatcher.run())
            while len(transport.received) < 6:
                await asyncio.sleep(0.005)
            dispatcher.stop.set()
            await task

        asyncio.run(main())
        sent = len(transport.received)
        values = list(states(engine).values())
        assert values.count("sent") == sent
        assert values.count("pending") == 60 - sent
        assert dispatcher.tally.released == 60 - sent - 0 or dispatcher.tally.released > 0
        assert "sending" not in values


def test_limit_and_rate(ready: Settings, tmp_path: Path, clock: FakeClock) -> None:
    seed(ready, tmp_path, emails(12))
    with opened(ready) as engine:
        row = queue(engine, clock)
        transport = MemoryTransport()
        started = time.monotonic()
        tally = run(engine, ready, row, transport, clock, limit=5, rate=Rate(50, 1))
        assert tally.sent == 5
        assert len(transport.received) == 5
        assert time.monotonic() - started >= 4 / 50
        assert list(states(engine).values()).count("pending") == 7


def test_a_message_that_cannot_be_made_fails_alone(
    ready: Settings, templates: Path, tmp_path: Path, clock: FakeClock
) -> None:
    body = templates / "closure-notice" / "body.txt"
    source = body.read_text(encoding="utf-8")
    body.write_text(source.replace("{% endblock %}", "{{ subscriber.attributes.code }}\n"
                                   "{% endblock %}"), encoding="utf-8")
    seed(ready, tmp_path, emails(3))
    with opened(ready) as engine:
        row = queue(engine, clock)
        tally = run(engine, ready, row, MemoryTransport(), clock)
        assert tally.failed == 3
        with read_transaction(engine) as connection:
            reply = connection.scalar(select(Delivery.last_reply).limit(1))
        assert reply is not None
        assert reply.startswith("not sent: ")
        assert "body.txt" in reply


def test_nothing_is_sent_once_its_lease_has_run_out(
    ready: Settings, tmp_path: Path, clock: FakeClock
) -> None:
    """A process paused longer than its lease (Ctrl-Z, a suspended machine) must not send
    what it claimed: another worker may have taken it over. Here the first message takes
    longer than the lease; the nine others claimed with it are not sent, but released."""
    seed(ready, tmp_path, emails(10))

    def slow_first(submission, seen):  # type: ignore[no-untyped-def]
        clock.advance(700)  # past the 600 s lease
        return ACCEPT

    transport = MemoryTransport(slow_first)
    with opened(ready) as engine:
        row = queue(engine, clock)
        tally = run(engine, ready, row, transport, clock, concurrency=1, batch_size=10,
                    limit=10)
        assert len(transport.received) == 1
        assert (tally.sent, tally.lost) == (1, 9)
        assert sorted(states(engine).values()) == ["pending"] * 9 + ["sent"]


def test_a_subscriber_erased_while_being_sent_does_not_stop_the_run(
    ready: Settings, tmp_path: Path, clock: FakeClock
) -> None:
    """`mailer subscribers forget` during a send deletes a delivery this worker holds: its
    outcome has nothing to be recorded against, and the others are recorded as usual."""
    from mailer import api

    seed(ready, tmp_path, emails(6))
    erased: list[str] = []

    def forget_one(submission, seen):  # type: ignore[no-untyped-def]
        if not erased:
            erased.append("ok00005@asso.fr")
            api.forget(ready, "ok00005@asso.fr")
        return ACCEPT

    transport = MemoryTransport(forget_one)
    with opened(ready) as engine:
        row = queue(engine, clock)
        run(engine, ready, row, transport, clock, concurrency=1)
        assert states(engine) == {f"ok0000{i}@asso.fr": "sent" for i in range(5)}
        assert len(attempts_log(engine)) == 5


def test_a_worker_process_that_dies_is_a_whole_run_error(
    ready: Settings, tmp_path: Path, clock: FakeClock
) -> None:
    """--workers: a forked worker killed mid-run (here it exits at once) makes the run end
    with WorkerError (exit 75) once the parent is done; the parent's own share is sent."""
    import os

    from mailer.core.errors import WorkerError
    from mailer.messages.campaign import load_campaign
    from mailer.messages.factory import MessageFactory
    from mailer.sending.dispatch import Dispatcher
    from mailer.sending.options import RunOptions
    from mailer.sending.workers import SendingWorkers

    seed(ready, tmp_path, emails(300))
    parent = os.getpid()
    with opened(ready) as engine:
        row = queue(engine, clock)
        factory = MessageFactory(load_campaign(ready, row.name), b"k" * 32, row.nonce)

        class DiesInTheChild:
            """A run's share: its dispatcher in this process; a forked worker dies."""

            def send_share(self, index, worker_engine, connections, progress):  # type: ignore[no-untyped-def]
                if os.getpid() != parent:
                    os._exit(3)  # the child dies before sending anything
                dispatcher = Dispatcher(worker_engine, row.id, factory, MemoryTransport(),
                                        RunOptions(concurrency=connections, batch_size=20),
                                        clock=clock, progress=progress)
                return asyncio.run(dispatcher.run(300))

        sender = DiesInTheChild()
        workers = SendingWorkers(engine, 2, 4, sender, None)
        workers.start()
        own = sender.send_share(0, engine, workers.connections[0], workers.report)
        with pytest.raises(WorkerError, match=r"exit status 3"):
            workers.finish(own)
        assert set(states(engine).values()) == {"sent"}
