"""The delivery state machine table, and keyed hashes / unsubscribe tokens."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailer.core.states import (
    DONE,
    TERMINAL,
    TRANSITIONS,
    DeliveryState,
    can_transition,
    origins_of,
)
from mailer.core.tokens import keyed_hash, make_token, token_subscriber_id, verify_token


def test_every_contract_state_is_in_the_table() -> None:
    assert [s.value for s in DeliveryState] == [
        "pending",
        "sending",
        "sent",
        "deferred",
        "uncertain",
        "failed",
        "skipped",
    ]
    assert set(TRANSITIONS) == set(DeliveryState)


def test_failed_skipped_are_terminal_and_sent_leaves_only_for_a_bounce() -> None:
    assert {DeliveryState.FAILED, DeliveryState.SKIPPED} == TERMINAL
    # `mailer bounces import`: a bounce report turns a sent message into a failed one.
    assert TRANSITIONS[DeliveryState.SENT] == {DeliveryState.FAILED}


def test_nothing_done_is_ever_sent_again() -> None:
    """No path of transitions leads from sent, failed or skipped back to sending."""
    for start in DONE:
        seen, frontier = {start}, [start]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert DeliveryState.SENDING not in seen, start


def test_sending_is_reached_only_by_a_claim() -> None:
    assert origins_of(DeliveryState.SENDING) == {
        DeliveryState.PENDING,
        DeliveryState.DEFERRED,
        DeliveryState.UNCERTAIN,
    }
    assert not can_transition(DeliveryState.SENT, DeliveryState.SENDING)
    assert can_transition(DeliveryState.SENDING, DeliveryState.UNCERTAIN)


@given(st.integers(min_value=1, max_value=2**63 - 1), st.emails())
def test_token_round_trip_and_tamper(subscriber_id: int, email: str) -> None:
    secret = b"k" * 32
    token = make_token(secret, subscriber_id, email)
    assert token_subscriber_id(token) == subscriber_id
    assert verify_token(secret, token, subscriber_id, email)
    assert not verify_token(b"other", token, subscriber_id, email)
    assert not verify_token(secret, token, subscriber_id, email + "x")
    assert "@" not in token


def test_malformed_tokens_name_nobody() -> None:
    for token in ["", "zz.abc", "1.", "1.short", "../../etc", "1." + "A" * 40]:
        assert token_subscriber_id(token) is None


def test_keyed_hash_depends_on_the_key() -> None:
    assert keyed_hash(b"a", "x@y.fr") != keyed_hash(b"b", "x@y.fr")
    assert len(keyed_hash(b"a", "x@y.fr")) == 64
