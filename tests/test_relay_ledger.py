"""The relay's budget in the ledger, on both databases: slots reserved in declared windows,
pauses that double, the waits a give-up age leaves out, and a campaign carried over days.

The days are an injectable clock's (tests/fakes.FakeClock); the relay is a real aiosmtpd one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mailer import api
from mailer.core.budget import Window, parse_quota, rate_window
from mailer.core.config import Settings, load_settings, relay_settings, relay_specs
from mailer.core.errors import ConfigError
from mailer.sending.policy import waited
from mailer.store import pauses, slots
from mailer.store.engine import read_transaction, write_transaction
from mailer.store.models import Delivery
from tests.fakes import FakeClock
from tests.sendkit import emails, opened, seed
from tests.smtpserver import ScriptedSMTPServer

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def test_quota_forms() -> None:
    assert parse_quota("2000/day") == (Window(86400.0, 2000),)
    assert parse_quota("100/h, 2000/day") == (Window(3600.0, 100), Window(86400.0, 2000))
    assert parse_quota("30/min") == (Window(60.0, 30),)
    assert str(Window(3600.0, 100)) == "100/h"
    for bad in ("lots", "0/day", "100/week", "100", "/h", ""):
        with pytest.raises(ConfigError):
            parse_quota(bad)
    assert rate_window(20.0) == Window(10.0, 200)  # held over 10 s, not per second
    assert rate_window(0.01) == Window(100.0, 1)


def test_relay_tables_replace_the_environment_relay(tmp_path: Path) -> None:
    (tmp_path / "mailer.toml").write_text(
        '[[relay]]\nname = "workspace"\nhost = "smtp.gmail.com"\nport = 587\n'
        'username = "asso@example.org"\npassword_env = "RELAY1_PASSWORD"\nquota = "2000/day"\n'
        'rate = "5"\nconcurrency = 2\n\n'
        '[[relay]]\nhost = "email-smtp.eu-west-1.amazonaws.com"\nquota = "100/h"\n',
        encoding="utf-8",
    )
    settings = load_settings(tmp_path / "mailer.toml", {
        "RELAY1_PASSWORD": "s3cret", "MAILER_SMTP_HOST": "ignored.example", "MAILER_RATE": "9",
    })
    first, second = relay_specs(settings)
    assert (first.name, first.port, first.password, first.concurrency) == (
        "workspace", 587, "s3cret", 2)
    assert first.quota == (Window(86400.0, 2000),)
    assert first.rate.per_second == 5
    assert second.name == "email-smtp.eu-west-1.amazonaws.com"
    assert second.password is None
    assert "s3cret" not in repr(first)
    # What a table leaves out, the run's settings say, command-line options included: the
    # second relay's rate and connections are MAILER_RATE's and the default's, or --rate's
    # and --concurrency's (the first keeps its own).
    seen = relay_settings(settings, second)
    assert (seen.rate.per_second, seen.concurrency) == (9, 4)
    options = settings.with_overrides(rate="3", concurrency=1)
    seen = relay_settings(options, second)
    assert (seen.rate.per_second, seen.concurrency) == (3, 1)
    seen = relay_settings(options, first)
    assert (seen.rate.per_second, seen.concurrency) == (5, 2)



def test_a_relay_table_may_turn_pipelining_off(tmp_path: Path) -> None:
    (tmp_path / "mailer.toml").write_text(
        '[[relay]]\nhost = "old.example.org"\npipelining = false\n\n'
        '[[relay]]\nhost = "new.example.org"\n', encoding="utf-8")
    settings = load_settings(tmp_path / "mailer.toml", {})
    old, new = relay_specs(settings)
    assert relay_settings(settings, old).smtp_pipelining is False
    assert relay_settings(settings, new).smtp_pipelining is True
    off = load_settings(tmp_path / "mailer.toml", {"MAILER_SMTP_PIPELINING": "no"})
    assert relay_settings(off, relay_specs(off)[1]).smtp_pipelining is False


@pytest.mark.parametrize(("table", "message"), [
    ('[[relay]]\nhost = "a"\npassword = "x"\n', "password is a secret"),
    ('[[relay]]\nport = 25\n', "host is missing"),
    ('[[relay]]\nhost = "a"\n\n[[relay]]\nhost = "a"\n', "two relays are named 'a'"),
    ('[[relay]]\nhost = "a"\nquota = "many"\n', "invalid quota 'many'"),
    ('[[relay]]\nhost = "a"\nsecurity = "ssl"\n', "must be one of"),
    ('[[relay]]\nhost = "a"\nspeed = 3\n', "unknown key 'speed'"),
    ('[[relay]]\nhost = "a"\npipelining = "sometimes"\n', "must be true or false"),
])
def test_bad_relay_tables_are_named(tmp_path: Path, table: str, message: str) -> None:
    (tmp_path / "mailer.toml").write_text(table, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(tmp_path / "mailer.toml", {})
    assert "mailer.toml" in caught.value.message


def test_no_window_is_exceeded_and_unused_slots_come_back(settings: Settings) -> None:
    windows = (Window(3600.0, 5),)
    with opened(settings) as engine, write_transaction(engine) as connection:
        first = slots.reserve(connection, "r", windows, T0, want=3, hold=5)
        second = slots.reserve(connection, "r", windows, T0, want=3, hold=5)
        assert (first.granted, second.granted) == (3, 2)
        full = slots.reserve(connection, "r", windows, T0, want=1, hold=5)
        assert full.granted == 0
        # The oldest block leaves the window an hour (and a little) after its last use.
        assert full.next_slot_at == T0 + timedelta(seconds=5 + 3600 + 2)
        assert slots.reserve(connection, "other", windows, T0, want=1, hold=5).granted == 1
        assert second.slot_id is not None
        slots.give_back(connection, second.slot_id, 2, T0 + timedelta(seconds=1))
        again = slots.reserve(connection, "r", windows, T0 + timedelta(seconds=1), want=9,
                              hold=5)
        assert again.granted == 2
        [use] = slots.usage(connection, "r", windows, T0 + timedelta(seconds=1))
        assert (use.used, use.next_slot_at is not None) == (5, True)
        later = T0 + timedelta(hours=1, seconds=10)
        assert slots.reserve(connection, "r", windows, later, want=9, hold=5).granted == 5


def test_a_pause_doubles_until_the_relay_accepts_again(settings: Settings) -> None:
    with opened(settings) as engine:
        with write_transaction(engine) as connection:
            one = pauses.pause(connection, "r", T0, cooldown=60, reason="550 5.4.5 quota")
            assert one.until == T0 + timedelta(seconds=60)
            # Paused already (another process, the same refusal): kept, not doubled.
            assert pauses.pause(connection, "r", T0, cooldown=60, reason="x").until == one.until
            assert pauses.current(connection, "r", T0 + timedelta(seconds=59)) is not None
            assert pauses.current(connection, "r", T0 + timedelta(seconds=60)) is None
            two = pauses.pause(connection, "r", one.until, cooldown=60, reason="again")
            assert two.until == one.until + timedelta(seconds=120)
            end = T0 + timedelta(days=5)
            assert pauses.pause(connection, "r", end, cooldown=60, reason="again", at_least=end
                                + timedelta(hours=5)).until == end + timedelta(hours=5)
            pauses.accepted(connection, "r", end + timedelta(days=1))
            fresh = pauses.pause(connection, "r", end + timedelta(days=1), cooldown=60,
                                 reason="later")
            assert fresh.strikes == 1
        with read_transaction(engine) as connection:
            assert len(pauses.waits(connection, T0)) == 4
        with write_transaction(engine) as connection:  # the old ones are forgotten
            assert pauses.forget_waits(connection, T0 + timedelta(days=6)) == 3
            assert len(pauses.waits(connection, T0)) == 1
    day = 86400.0
    with opened(settings) as engine, write_transaction(engine) as connection:
        big = pauses.pause(connection, "s", T0, cooldown=day, reason="q")
        twice = pauses.pause(connection, "s", big.until, cooldown=day, reason="q")
        assert twice.until - big.until == timedelta(days=1)  # at most a day


def test_waiting_is_the_union_of_the_waits() -> None:
    h = timedelta(hours=1)
    waits = [(T0 + h, T0 + 3 * h), (T0 + 2 * h, T0 + 4 * h), (T0 + 10 * h, T0 + 20 * h)]
    assert waited(waits, T0, T0 + 12 * h) == 5 * 3600
    assert waited(waits, T0 + 3 * h, T0 + 5 * h) == 3600
    assert waited([], T0, T0 + h) == 0


def _budgeted(settings: Settings, server: ScriptedSMTPServer, quota: str,
              **retry: Any) -> Settings:
    relay = server.settings()
    return replace(settings, smtp_host=relay.smtp_host, smtp_port=relay.smtp_port,
                   smtp_security=relay.smtp_security, smtp_timeout=5.0,
                   smtp_data_timeout=5.0, quota=parse_quota(quota), concurrency=4, **retry)


def _days_to_finish(settings: Settings, clock: FakeClock, everyone: int) -> int:
    """Run `send` on day one, then one `retry` a day until everyone has it; the days."""
    report = api.send(settings, "closure-notice", clock=clock)
    assert report.tally.wait == "window"
    days = 1
    while api.status(settings, "closure-notice", clock)["counts"]["sent"] < everyone:
        clock.advance(86400 + 60)
        days += 1
        assert api.retry(settings, clock=clock), "nothing due, yet not everyone has it"
        assert days < 10
    return days


def test_a_list_at_500_a_day_ends_in_four_days(
    settings: Settings, templates: Path, tmp_path: Path, smtp_server: ScriptedSMTPServer,
) -> None:
    """2,000 people, 500/day declared: each day's run sends 500 and stops (exit 0, the next
    slot a day away); the fourth day ends it, one copy each."""
    clock = FakeClock(T0)
    seed(settings, tmp_path, emails(2000))
    settings = _budgeted(settings, smtp_server, "500/day")
    assert _days_to_finish(settings, clock, 2000) == 4
    data = api.status(settings, "closure-notice", clock)
    assert data["counts"]["sent"] == 2000
    assert data["counts"]["failed"] == 0
    assert sorted(smtp_server.copies_by_recipient().values()) == [1] * 2000
    [relay] = data["relays"]
    assert relay["windows"][0]["limit"] == 500
    assert relay["windows"][0]["used"] == 500  # the fourth day's


def test_days_spent_waiting_for_the_budget_do_not_count_toward_giving_up(
    settings: Settings, templates: Path, tmp_path: Path,
    smtp_server_factory: Callable[..., ScriptedSMTPServer],
) -> None:
    """The give-up age is one day; "slow" is refused (451) twice, a day apart, because the
    window of 4/day is full in between: it is not given up, and gets its copy on day three."""
    server = smtp_server_factory(script=lambda rcpt, attempt: (
        "451 4.3.0 try again later" if rcpt.startswith("slow") and attempt <= 2 else None))
    clock = FakeClock(T0)
    seed(settings, tmp_path, ["slow@asso.fr", *emails(7)])
    settings = _budgeted(settings, server, "4/day", retry_max_age=86400.0,
                         retry_base_delay=3600.0, retry_max_delay=7200.0)
    assert _days_to_finish(settings, clock, 8) == 3
    data = api.status(settings, "closure-notice", clock)
    assert data["counts"]["failed"] == 0
    assert server.copies_by_recipient()["slow@asso.fr"] == 1
    with opened(settings) as engine, read_transaction(engine) as connection:
        assert connection.scalar(select(func.max(Delivery.attempts))) == 3


def test_status_tells_the_plan(settings: Settings, tmp_path: Path) -> None:
    seed(settings, tmp_path, emails(3))
    settings = replace(settings, smtp_host="smtp.example.org",
                       quota=parse_quota("100/h,2000/day"))
    data = api.status(settings)
    assert data["relays"] == [{"name": "smtp.example.org", "paused_until": None,
                               "refusal": None, "windows": [
                                   {"limit": 100, "seconds": 3600, "used": 0,
                                    "next_slot_at": None},
                                   {"limit": 2000, "seconds": 86400, "used": 0,
                                    "next_slot_at": None}]}]


def test_status_estimates_when_the_campaign_will_be_done(  # type: ignore[no-untyped-def]
    cli, tmp_path: Path, templates: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """18 left at 100/h and 10/day: the day's window is the narrower, about 2 days."""
    lines = "\n".join(f"p{i}@asso.fr" for i in range(18))
    (tmp_path / "list.csv").write_text(f"email\n{lines}\n", encoding="utf-8")
    assert cli("import", "list.csv").code == 0
    assert cli("send", "closure-notice", "--dry-run", "--outbox", "out").code == 0
    assert cli("send", "closure-notice", "--limit", "1", "--outbox", "out").code == 0
    monkeypatch.setenv("MAILER_SMTP_HOST", "smtp.example.org")
    monkeypatch.setenv("MAILER_QUOTA", "100/h,10/day")
    data = json.loads(cli("status", "closure-notice", "--json").stdout)
    assert data["plan"]["left"] == 17
    assert data["plan"]["per_day"] == 10
    assert data["plan"]["days"] == 1.7
    human = cli("status", "closure-notice").stdout
    assert "17 left; at 10/day: about 2 days, until " in human
    assert "Relay smtp.example.org: 0 of 100/h used; 0 of 10/day used" in human
