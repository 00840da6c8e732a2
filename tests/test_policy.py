"""The pure sending policy: reply → outcome, backoff with jitter, giving up."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.core.delivery import Reply, Stage
from mailer.core.statuscodes import enhanced_status
from mailer.sending.policy import Backoff, Outcome, decide, is_throttling

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
BACKOFF = Backoff(300, 14400, 345600)


def outcome_of(code: int | None, text: str, stage: Stage, *, first: datetime = NOW,
               attempts: int = 1) -> object:
    return decide(Reply(code, text, stage), attempts=attempts, first_attempt_at=first, now=NOW,
                  backoff=BACKOFF, rng=random.Random(1))


@pytest.mark.parametrize(
    ("code", "text", "stage", "outcome", "bounce", "throttle"),
    [
        (250, "2.0.0 Ok: queued as 4XyZ", Stage.DATA_END, Outcome.SENT, False, False),
        (None, "connection lost", Stage.DATA_END, Outcome.UNCERTAIN, False, False),
        (None, "timed out", Stage.DATA_END, Outcome.UNCERTAIN, False, False),
        (None, "connection lost", Stage.RCPT, Outcome.DEFERRED, False, False),
        (None, "connection lost", Stage.DATA, Outcome.DEFERRED, False, False),
        (421, "4.7.0 too many connections", Stage.RCPT, Outcome.REQUEUED, False, True),
        (421, "closing", Stage.DATA_END, Outcome.REQUEUED, False, True),
        (451, "4.3.0 try again", Stage.RCPT, Outcome.DEFERRED, False, False),
        (450, "4.7.1 greylisted", Stage.RCPT, Outcome.DEFERRED, False, True),
        (452, "4.2.2 over quota", Stage.RCPT, Outcome.DEFERRED, False, False),
        (552, "5.2.2 mailbox full", Stage.RCPT, Outcome.DEFERRED, False, False),
        (552, "5.3.4 message too big", Stage.DATA_END, Outcome.FAILED, False, False),
        (550, "5.1.1 no such user", Stage.RCPT, Outcome.FAILED, True, False),
        (553, "5.1.3 bad address syntax", Stage.RCPT, Outcome.FAILED, True, False),
        (550, "5.1.0 Sender address rejected: User unknown", Stage.RCPT, Outcome.FAILED,
         False, False),
        (550, "5.1.1 <x@asso.fr>: Sender address rejected", Stage.RCPT, Outcome.FAILED,
         False, False),
        (553, "5.1.8 bad sender's system address", Stage.RCPT, Outcome.FAILED, False, False),
        (550, "5.1.10 null MX", Stage.RCPT, Outcome.FAILED, True, False),
        (550, "5.7.1 rejected as spam", Stage.DATA_END, Outcome.FAILED, False, False),
        (554, "transaction failed", Stage.DATA_END, Outcome.FAILED, False, False),
        (250, "odd 2xx before the end", Stage.RCPT, Outcome.DEFERRED, False, False),
    ],
)
def test_reply_outcomes(code: int | None, text: str, stage: Stage, outcome: Outcome,
                        bounce: bool, throttle: bool) -> None:
    decision = outcome_of(code, text, stage)
    assert decision.outcome is outcome  # type: ignore[attr-defined]
    assert decision.bounce is bounce  # type: ignore[attr-defined]
    assert decision.throttle is throttle  # type: ignore[attr-defined]


def test_enhanced_status() -> None:
    assert enhanced_status("5.1.1 <x@y>: no such user") == "5.1.1"
    assert enhanced_status("  4.7.1 greylisted") == "4.7.1"
    assert enhanced_status("Ok") is None
    assert enhanced_status("5.1") is None
    assert is_throttling(Reply(421, "bye", Stage.CONNECT))
    assert not is_throttling(Reply(None, "4.7.1", Stage.RCPT))


def test_backoff_doubles_from_five_minutes_to_four_hours() -> None:
    rng = random.Random(7)
    delays = [BACKOFF.delay(n, rng) for n in range(1, 10)]
    bases = [300, 600, 1200, 2400, 4800, 9600, 14400, 14400, 14400]
    for delay, base in zip(delays, bases, strict=True):
        assert base <= delay <= base * 1.1


@given(st.integers(min_value=1, max_value=10_000), st.integers(min_value=0))
def test_backoff_is_bounded(attempts: int, seed: int) -> None:
    delay = BACKOFF.delay(attempts, random.Random(seed))
    assert 300 <= delay <= 14400 * 1.1


def test_deferred_gets_next_attempt_and_gives_up_after_max_age() -> None:
    decision = outcome_of(451, "4.3.0 later", Stage.RCPT)
    assert decision.outcome is Outcome.DEFERRED  # type: ignore[attr-defined]
    assert NOW + timedelta(seconds=300) <= decision.next_attempt_at <= NOW + timedelta(seconds=330)  # type: ignore[attr-defined]
    # The last try is at the deadline, not after it.
    near = outcome_of(451, "4.3.0 later", Stage.RCPT, first=NOW - timedelta(seconds=345500),
                      attempts=20)
    assert near.next_attempt_at == NOW + timedelta(seconds=100)  # type: ignore[attr-defined]
    old = outcome_of(451, "4.3.0 later", Stage.RCPT, first=NOW - timedelta(days=4), attempts=30)
    assert old.outcome is Outcome.FAILED  # type: ignore[attr-defined]
    # A disconnect before the end of DATA also gives up after the same age.
    lost = outcome_of(None, "lost", Stage.MAIL, first=NOW - timedelta(days=5))
    assert lost.outcome is Outcome.FAILED  # type: ignore[attr-defined]
