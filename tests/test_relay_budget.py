"""The relay's budget, end to end: `mailer send` / `retry` / `status` through the CLI against
scripted aiosmtpd relays on 127.0.0.1 (tests/smtpserver.py), on a SQLite database.

- A *budget spent* reply (Gmail's `550 5.4.5 … quota`, Microsoft's `554 5.2.0 …
  SubmissionQuotaExceededException`, a French `451 4.7.1 … limite d'envoi`), at the greeting,
  MAIL, RCPT or after the final dot, before or after acceptances: the delivery goes back to
  where it was (pending or deferred) with no attempt counted, nobody is failed or bounced, the
  run stops with exit 75 and one `Error:` line, and the relay is paused in the database for
  MAILER_QUOTA_COOLDOWN seconds (doubling on each new refusal). While paused, `send` and
  `retry` make no connection and exit 0; after the pause, `retry` sends the rest.
- *Slow down* replies (421, `451 4.7.1 rate limited`, a refused extra connection): the run
  slows down and carries on, charging nobody; only a relay that accepts nothing stops it.
- MAILER_QUOTA: sliding windows counted from the database; a full window stops the run with
  exit 0 and says when the next slot opens.
- Several `[[relay]]` tables in mailer.toml: the next relay takes over when one's budget is
  spent, or it refuses the credentials.

The first tests check the scripted relay's budget options themselves (no mailer involved).
Every scenario ends the same way: each subscriber has exactly one copy across the relays, and
nobody is failed or bounced for a reply about the sender. The window races (several
processes) are in test_relay_windows.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import smtplib
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import REPO_TEMPLATES
from tests.smtpserver import Refusal, RefusalStage, ScriptedSMTPServer, ServerFactory

CAMPAIGN = "closure-notice"
STATES = ["pending", "sending", "sent", "deferred", "uncertain", "failed", "skipped"]
ZERO = dict.fromkeys(STATES, 0)

# Budget spent, as providers word it.
GMAIL = "550 5.4.5 Daily user sending quota exceeded. Learn more at https://support.google.com"
MICROSOFT = ("554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; "
             "Failed to process message due to a permanent exception")
FRENCH = "451 4.7.1 Vous avez atteint votre limite d'envoi quotidienne"
# Slow down.
RATE_LIMITED = "451 4.7.1 rate limited, slow down"
TRY_LATER = "421 4.7.0 Try again later, closing connection."

COOLDOWN = 1.0  # MAILER_QUOTA_COOLDOWN in most tests
LONGER_COOLDOWN = 2.0  # where a test must act while the relay is still paused


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only here (overrides conftest's two backends): the budget's logic is the same on
    both, and its races on PostgreSQL are in test_relay_windows.py."""
    return f"sqlite:///{tmp_path / 'subscribers.db'}"


Setup = Callable[..., Any]


@pytest.fixture
def setup(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    """`setup(server, addresses, **env)`: point the CLI at the relay (None: mailer.toml's
    relays), import the addresses, return the `cli` runner. MAILER_QUOTA_COOLDOWN is 1 s
    unless given."""
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")

    def run(server: ScriptedSMTPServer | None, addresses: list[str], **env: str) -> Any:
        values = {"MAILER_SMTP_TIMEOUT": "3", "MAILER_SMTP_DATA_TIMEOUT": "3",
                  "MAILER_QUOTA_COOLDOWN": f"{COOLDOWN:g}"}
        if server is not None:
            values.update(MAILER_SMTP_HOST=server.host, MAILER_SMTP_PORT=str(server.port),
                          MAILER_SMTP_SECURITY=server.tls)
        for name, value in {**values, **env}.items():
            monkeypatch.setenv(name, value)
        path = tmp_path / "list.csv"
        rows = [f"{address},Hélène,Dupont" for address in addresses]
        path.write_text("email,first_name,last_name\n" + "\n".join(rows) + "\n", "utf-8")
        result = cli("import", str(path))
        assert result.code == 0, result.stderr
        return cli

    return run


def emails(n: int, prefix: str = "ok") -> list[str]:
    return [f"{prefix}{i:03d}@asso.fr" for i in range(n)]


# --- reading the outcome --------------------------------------------------------------------


def status(cli: Any) -> dict[str, Any]:
    result = cli("status", CAMPAIGN, "--json")
    assert result.code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def counts(cli: Any) -> dict[str, int]:
    found: dict[str, int] = status(cli)["counts"]
    return found


def bounced(cli: Any) -> int:
    result = cli("status", "--json")
    assert result.code == 0, result.stderr
    number: int = json.loads(result.stdout)["subscribers"]["bounced"]
    return number


def query(sql: str) -> list[Any]:
    engine = create_engine(os.environ["MAILER_DATABASE_URL"])
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql)))
    finally:
        engine.dispose()


def ledger() -> dict[str, tuple[str, int, str]]:
    """email -> (delivery state, deliveries.attempts, subscriber status)."""
    rows = query("SELECT s.email, d.state, d.attempts, s.status FROM deliveries d "
                 "JOIN subscribers s ON s.id = d.subscriber_id")
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def relays(cli: Any) -> list[dict[str, Any]]:
    data = status(cli)
    assert "relays" in data, f"no `relays` key in status --json: {data}"
    found: list[dict[str, Any]] = data["relays"]
    return found


def timestamp(iso: str) -> float:
    """An ISO time from the JSON as a Unix time (a naive one is taken as UTC)."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def paused_until(cli: Any, index: int = 0) -> float | None:
    until = relays(cli)[index]["paused_until"]
    return None if until is None else timestamp(until)


def wait_out_the_pause(cli: Any, index: int = 0) -> None:
    """Sleep until the relay's pause is over: past its `paused_until`, and until `status
    --json` says null (the time shown may be rounded down to the second)."""
    until = paused_until(cli, index)
    assert until is not None, f"the relay is not paused: {relays(cli)}"
    delay = until - time.time() + 0.1
    assert delay < 10, f"paused for {delay:.1f} s more: longer than this test's cool-down"
    time.sleep(max(delay, 0.0))
    deadline = until + 1.5
    while paused_until(cli, index) is not None and time.time() < deadline:
        time.sleep(0.05)


def the_error(result: Any) -> str:
    """The run's one `Error:` line (and no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    errors: list[str] = [line for line in result.stderr.splitlines()
                         if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def assert_stopped_for_the_budget(result: Any, *, quota: bool = True) -> None:
    """Exit 75 and one `Error:` line: quota, nothing was marked failed, next try at."""
    assert result.code == 75, (result.code, result.stdout, result.stderr)
    line = the_error(result)
    if quota:
        assert "quota" in line.lower(), line
    assert "nothing was marked failed" in line, line
    assert "next try at" in line, line


def assert_paused_then_quiet(cli: Any, servers: Iterable[ScriptedSMTPServer]) -> None:
    """While the relay is paused, `retry` and `send` connect to nothing and exit 0."""
    servers = list(servers)
    before = [server.connections for server in servers]
    assert paused_until(cli) is not None, relays(cli)
    for command in (("retry",), ("send", CAMPAIGN)):
        result = cli(*command)
        assert result.code == 0, (command, result.stdout, result.stderr)
        assert "paused until" in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr
    assert [server.connections for server in servers] == before, "connected during the pause"


def assert_one_copy_each(servers: Iterable[ScriptedSMTPServer], everyone: Iterable[str]) -> None:
    copies: Counter[str] = Counter()
    for server in servers:
        copies.update(server.copies_by_recipient())
    everyone = list(everyone)
    missing = [address for address in everyone if copies[address] == 0]
    twice = {address: n for address, n in copies.items() if n > 1}
    assert not missing, f"{len(missing)} got nothing, e.g. {missing[:5]}"
    assert not twice, f"{len(twice)} got more than one copy: {dict(list(twice.items())[:5])}"
    assert set(copies) == set(everyone)


def assert_waiting_uncharged(sent_to: Iterable[str]) -> None:
    """Everyone the relay has is `sent` (one attempt); everyone else `pending`, 0 attempts;
    nobody bounced."""
    sent = set(sent_to)
    for email, (state, attempts, subscriber) in ledger().items():
        if email in sent:
            assert (state, attempts) == ("sent", 1), (email, state, attempts)
        else:
            assert (state, attempts) == ("pending", 0), (email, state, attempts)
        assert subscriber == "active", (email, subscriber)


def received(server: ScriptedSMTPServer) -> set[str]:
    return set(server.copies_by_recipient())


# --- the scripted relay's budget options (pass without mailer's budget) ----------------------


def _send(server: ScriptedSMTPServer, recipient: str) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=5) as client:
        client.sendmail("asso@asso.fr", [recipient], b"Subject: hi\r\n\r\nhello\r\n")


@pytest.mark.parametrize(
    ("stage", "error"),
    [
        ("mail", smtplib.SMTPSenderRefused),
        ("rcpt", smtplib.SMTPRecipientsRefused),
        ("data", smtplib.SMTPDataError),
    ],
)
def test_the_relay_refuses_after_n_accepted_until_lifted(
    smtp_server: ScriptedSMTPServer, stage: RefusalStage, error: type[Exception]
) -> None:
    quota = smtp_server.refuse(stage, GMAIL, after=2)
    started = time.time()
    _send(smtp_server, "ok1@asso.fr")
    _send(smtp_server, "ok2@asso.fr")
    assert smtp_server.accepted == 2
    for _ in range(2):
        with pytest.raises(error) as refused:
            _send(smtp_server, "ok3@asso.fr")
        assert "5.4.5 Daily user sending quota exceeded" in str(refused.value)
    assert quota.refused == 2
    assert smtp_server.accepted == 2
    quota.active = False
    _send(smtp_server, "ok3@asso.fr")
    assert [m.recipients for m in smtp_server.messages] == [
        ("ok1@asso.fr",), ("ok2@asso.fr",), ("ok3@asso.fr",)]
    stamps = [m.received_at for m in smtp_server.messages]
    assert started <= stamps[0] <= stamps[1] <= stamps[2] <= time.time()
    assert smtp_server.connections == len(smtp_server.sessions) == 5


def test_scripts_get_their_counts(smtp_server_factory: ServerFactory) -> None:
    calls: list[tuple[str, object, int]] = []

    def mail(sender: str, n: int) -> str | None:
        calls.append(("mail", sender, n))
        return None

    def data(recipients: tuple[str, ...], n: int) -> str | None:
        calls.append(("data", recipients, n))
        return "554 5.2.0 SubmissionQuotaExceededException" if n == 2 else None

    def greeting(n: int) -> str | None:
        calls.append(("greeting", "", n))
        return None

    server = smtp_server_factory(mail_script=mail, data_script=data, greeting_script=greeting)
    _send(server, "ok1@asso.fr")
    with pytest.raises(smtplib.SMTPDataError):
        _send(server, "ok2@asso.fr")
    assert calls == [
        ("greeting", "", 1), ("mail", "asso@asso.fr", 1), ("data", ("ok1@asso.fr",), 1),
        ("greeting", "", 2), ("mail", "asso@asso.fr", 2), ("data", ("ok2@asso.fr",), 2),
    ]
    assert server.accepted == 1  # a refused message is not recorded
    server.reset()
    assert (server.accepted, server.connections) == (0, 0)


def test_connections_refused_at_the_greeting_are_counted(
    smtp_server_factory: ServerFactory,
) -> None:
    server = smtp_server_factory(
        greeting_script=lambda n: TRY_LATER if n == 1 else None, max_connections=1)
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP(server.host, server.port, timeout=5)
    assert refused.value.smtp_code == 421
    assert server.connections == 1
    assert server.sessions == []  # it never said EHLO
    _wait_for(lambda: server.open_connections == 0)
    with smtplib.SMTP(server.host, server.port, timeout=5) as first:
        first.ehlo()
        with pytest.raises(smtplib.SMTPConnectError):  # one too many: max_connections
            smtplib.SMTP(server.host, server.port, timeout=5)
    assert server.connections == 3
    assert len(server.sessions) == 1


def test_a_scripted_421_hangs_up(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(mail_script=lambda sender, n: TRY_LATER)
    with smtplib.SMTP(server.host, server.port, timeout=5) as client:
        client.ehlo()
        code, _ = client.mail("asso@asso.fr")
        assert code == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    assert server.accepted == 0


def test_a_refusal_accepts_any_script_arguments(smtp_server: ScriptedSMTPServer) -> None:
    quota = Refusal(smtp_server, FRENCH, after=0)
    assert quota() == quota(3) == quota("a@b", 1) == quota(("a@b",), 1) == FRENCH
    quota.active = False
    assert quota("a@b", 1) is None
    with pytest.raises(ValueError):
        Refusal(smtp_server, "quota exceeded")
    with pytest.raises(ValueError):
        smtp_server.refuse("helo", FRENCH)  # type: ignore[arg-type]


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --- 1. the budget is spent -----------------------------------------------------------------


@pytest.mark.parametrize("stage", ["mail", "rcpt", "data"])
def test_a_quota_hit_mid_run_waits_for_the_pause_then_sends_the_rest(
    setup: Setup, smtp_server: ScriptedSMTPServer, stage: RefusalStage
) -> None:
    """The relay accepts 10, then refuses at `stage`: 10 sent, the rest pending, uncharged."""
    everyone = emails(30)
    quota = smtp_server.refuse(stage, GMAIL, after=10)
    cli = setup(smtp_server, everyone, MAILER_QUOTA_COOLDOWN=f"{LONGER_COOLDOWN:g}")
    started = time.time()
    result = cli("send", CAMPAIGN, "--concurrency", "2")
    ended = time.time()
    assert_stopped_for_the_budget(result)
    sent = smtp_server.accepted
    # After the dot the count is exact; at MAIL or RCPT, the other connection's message may
    # have passed that stage just before the 10th was accepted.
    assert (sent == 10) if stage == "data" else (10 <= sent <= 11), sent
    assert quota.refused >= 1
    assert counts(cli) == {**ZERO, "sent": sent, "pending": 30 - sent}
    assert_waiting_uncharged(received(smtp_server))
    assert bounced(cli) == 0
    until = paused_until(cli)
    assert until is not None
    assert started + LONGER_COOLDOWN - 1 <= until <= ended + LONGER_COOLDOWN + 1, until - ended

    assert_paused_then_quiet(cli, [smtp_server])
    assert smtp_server.accepted == sent

    quota.active = False  # the next day
    wait_out_the_pause(cli)
    after = cli("retry")
    assert after.code == 0, after.stderr
    assert counts(cli) == {**ZERO, "sent": 30}, (after.stdout, after.stderr, relays(cli))
    assert_one_copy_each([smtp_server], everyone)
    assert all(attempts == 1 for _, attempts, _ in ledger().values())
    assert bounced(cli) == 0
    assert paused_until(cli) is None


@pytest.mark.parametrize(
    ("line", "stage"),
    [(GMAIL, "rcpt"), (MICROSOFT, "data"), (FRENCH, "mail")],
    ids=["gmail-rcpt", "microsoft-data", "french-mail"],
)
@pytest.mark.parametrize(
    ("subscribers", "options"),
    [(30, ("--limit", "10")), (3, ())],
    ids=["limit-10", "three-due"],
)
def test_a_quota_already_spent_charges_nobody(
    setup: Setup, smtp_server: ScriptedSMTPServer, line: str, stage: RefusalStage,
    subscribers: int, options: tuple[str, ...],
) -> None:
    """Refused from the very first message: whether 10 or only 3 are tried, not one is
    failed (a few identical 5xx replies are the relay's budget, not bad addresses)."""
    everyone = emails(subscribers)
    quota = smtp_server.refuse(stage, line, after=0)
    cli = setup(smtp_server, everyone)
    result = cli("send", CAMPAIGN, *options)
    assert_stopped_for_the_budget(result)
    assert quota.refused >= 1
    assert smtp_server.accepted == 0
    assert counts(cli) == {**ZERO, "pending": subscribers}
    assert_waiting_uncharged(set())
    assert bounced(cli) == 0
    assert paused_until(cli) is not None


@pytest.mark.parametrize(
    "line",
    ["554 5.7.0 Daily sending quota exceeded",
     "421 4.7.0 Daily sending quota exceeded, closing connection"],
    ids=["554", "421"],
)
def test_a_quota_refusal_at_the_greeting(
    setup: Setup, smtp_server: ScriptedSMTPServer, line: str
) -> None:
    everyone = emails(8)
    quota = smtp_server.refuse("greeting", line, after=0)
    cli = setup(smtp_server, everyone)
    result = cli("send", CAMPAIGN)
    assert_stopped_for_the_budget(result)
    assert quota.refused >= 1
    assert smtp_server.accepted == 0
    assert counts(cli) == {**ZERO, "pending": 8}
    assert_waiting_uncharged(set())
    assert paused_until(cli) is not None
    assert relays(cli)[0]["name"] == "127.0.0.1"  # the env relay is named by its host


def test_a_refusal_leaves_a_deferred_delivery_deferred(
    setup: Setup, smtp_server: ScriptedSMTPServer
) -> None:
    """A delivery deferred earlier and refused for the budget on its retry stays deferred,
    with its one attempt, until the pause is over."""
    everyone = [*emails(5), "temp1@asso.fr", "temp2@asso.fr"]
    cli = setup(smtp_server, everyone, MAILER_RETRY_BASE_DELAY="0.05",
                MAILER_RETRY_MAX_DELAY="0.1")
    first = cli("send", CAMPAIGN)
    assert first.code == 0, first.stderr
    assert counts(cli) == {**ZERO, "sent": 5, "deferred": 2}
    quota = smtp_server.refuse("rcpt", GMAIL, after=0)
    time.sleep(0.2)  # their retry is due
    result = cli("retry")
    assert_stopped_for_the_budget(result)
    assert quota.refused >= 1
    assert counts(cli) == {**ZERO, "sent": 5, "deferred": 2}
    rows = ledger()
    assert rows["temp1@asso.fr"][:2] == rows["temp2@asso.fr"][:2] == ("deferred", 1)

    quota.active = False
    wait_out_the_pause(cli)
    after = cli("retry")
    assert after.code == 0, after.stderr
    assert counts(cli) == {**ZERO, "sent": 7}
    assert ledger()["temp1@asso.fr"][:2] == ("sent", 2)
    assert_one_copy_each([smtp_server], everyone)


def test_the_cooldown_doubles_on_a_new_refusal(
    setup: Setup, smtp_server: ScriptedSMTPServer
) -> None:
    cooldown = LONGER_COOLDOWN
    quota = smtp_server.refuse("mail", GMAIL, after=0)
    cli = setup(smtp_server, emails(6), MAILER_QUOTA_COOLDOWN=f"{cooldown:g}")
    pauses = []
    for attempt in (1, 2):
        started = time.time()
        result = cli("retry") if attempt == 2 else cli("send", CAMPAIGN)
        ended = time.time()
        assert_stopped_for_the_budget(result)
        until = paused_until(cli)
        assert until is not None
        pauses.append((until - started, until - ended))
        if attempt == 1:
            wait_out_the_pause(cli)
    assert quota.refused >= 2
    # paused_until may be rounded to the second: a second of tolerance either way.
    (first_from_start, first_from_end), (second_from_start, second_from_end) = pauses
    assert cooldown - 1 <= first_from_start, pauses
    assert first_from_end <= cooldown + 1, pauses
    assert 2 * cooldown - 1 <= second_from_start, pauses
    assert second_from_end <= 2 * cooldown + 1, pauses
    assert smtp_server.accepted == 0
    assert counts(cli) == {**ZERO, "pending": 6}


# --- 2. slow down ---------------------------------------------------------------------------


def test_throttling_slows_the_run_down_and_everyone_is_sent_once(
    setup: Setup, smtp_server_factory: ServerFactory
) -> None:
    """Two connections allowed for four wanted, and `451 4.7.1 rate limited` the first time
    for a few recipients: the run slows down, carries on, and charges only the success."""
    everyone = emails(30)
    throttled = {everyone[i] for i in (3, 11, 17, 25)}
    server = smtp_server_factory(
        max_connections=2,
        script=lambda rcpt, attempt: RATE_LIMITED if rcpt in throttled and attempt == 1
        else None,
    )
    cli = setup(server, everyone)
    result = cli("send", CAMPAIGN, "--concurrency", "4", "--json")
    assert result.code == 0, (result.stdout, result.stderr)
    data = json.loads(result.stdout)
    assert data["run"]["slowdowns"] >= 1, data["run"]
    assert data["counts"] == {**ZERO, "sent": 30}
    assert_one_copy_each([server], everyone)
    assert all(server.rcpt_attempts(address) == 2 for address in throttled)
    assert {(state, attempts) for state, attempts, _ in ledger().values()} == {("sent", 1)}
    assert bounced(cli) == 0
    assert paused_until(cli) is None


def test_a_relay_that_keeps_saying_try_later_stops_the_run(
    setup: Setup, smtp_server_factory: ServerFactory
) -> None:
    """Every connection greeted with 421: nothing is accepted, so the run stops (exit 75),
    charges nobody and pauses the relay."""
    server = smtp_server_factory(greeting_script=lambda n: TRY_LATER)
    cli = setup(server, emails(10), MAILER_QUOTA_COOLDOWN=f"{LONGER_COOLDOWN:g}")
    result = cli("send", CAMPAIGN)
    assert_stopped_for_the_budget(result, quota=False)
    assert server.connections >= 1
    assert counts(cli) == {**ZERO, "pending": 10}
    assert_waiting_uncharged(set())
    until = paused_until(cli)
    assert until is not None
    assert until > time.time()
    assert_paused_then_quiet(cli, [server])


# --- 3. a recipient's own refusal, in a run stopped by the budget ---------------------------


def test_a_bad_mailbox_still_fails_in_a_run_stopped_by_the_quota(
    setup: Setup, smtp_server: ScriptedSMTPServer
) -> None:
    """reject… gets `550 5.1.1` at RCPT whatever the budget; the others 550 5.4.5 once six
    are accepted. The two bad mailboxes come first in the list (one connection, in order)."""
    everyone = ["reject-a@asso.fr", "ok-first@asso.fr", "reject-b@asso.fr", *emails(20)]
    rejects = {"reject-a@asso.fr", "reject-b@asso.fr"}
    quota = Refusal(smtp_server, GMAIL, after=6)
    smtp_server.script = lambda rcpt, attempt: None if rcpt in rejects else quota(rcpt, attempt)
    cli = setup(smtp_server, everyone)
    result = cli("send", CAMPAIGN, "--concurrency", "1")
    assert_stopped_for_the_budget(result)
    assert smtp_server.accepted == 6
    rows = ledger()
    for address in rejects:
        assert rows[address] == ("failed", 1, "bounced"), (address, rows[address])
    assert bounced(cli) == 2
    assert counts(cli) == {**ZERO, "sent": 6, "failed": 2, "pending": len(everyone) - 8}
    for email, (state, attempts, subscriber) in rows.items():
        if email not in rejects and email not in received(smtp_server):
            assert (state, attempts, subscriber) == ("pending", 0, "active"), email

    quota.active = False
    wait_out_the_pause(cli)
    after = cli("retry")
    assert after.code == 0, after.stderr
    assert counts(cli) == {**ZERO, "sent": len(everyone) - 2, "failed": 2}
    assert bounced(cli) == 2
    assert_one_copy_each([smtp_server], [a for a in everyone if a not in rejects])


# --- 4. a declared window: MAILER_QUOTA ------------------------------------------------------


def test_a_full_window_stops_the_run_with_exit_0_until_the_next_slot(
    setup: Setup, smtp_server: ScriptedSMTPServer
) -> None:
    everyone = emails(12)
    cli = setup(smtp_server, everyone, MAILER_QUOTA="5/h")
    started = time.time()
    first = cli("send", CAMPAIGN)
    assert first.code == 0, (first.stdout, first.stderr)
    assert "next slot" in first.stderr, first.stderr
    assert re.search(r"\b7\b", first.stderr), first.stderr  # how many are left
    assert smtp_server.accepted == 5
    for command in (("send", CAMPAIGN), ("retry",)):
        again = cli(*command)
        assert again.code == 0, (command, again.stdout, again.stderr)
        assert smtp_server.accepted == 5, command
    data = status(cli)
    assert data["counts"] == {**ZERO, "sent": 5, "pending": 7}
    [relay] = data["relays"]
    assert relay["name"] == "127.0.0.1"
    assert relay["paused_until"] is None  # full, not paused
    [window] = relay["windows"]
    assert {k: v for k, v in window.items() if k != "next_slot_at"} == {
        "limit": 5, "seconds": 3600, "used": 5}
    assert set(window) == {"limit", "seconds", "used", "next_slot_at"}
    # An hour after the first of the five, give or take the seconds of margin mailer keeps.
    assert started + 3600 - 2 <= timestamp(window["next_slot_at"]) <= time.time() + 3600 + 5
    assert_waiting_uncharged(received(smtp_server))
    assert bounced(cli) == 0


def test_several_windows_are_counted_and_shown(
    setup: Setup, smtp_server: ScriptedSMTPServer
) -> None:
    cli = setup(smtp_server, emails(4), MAILER_QUOTA="100/h,2000/day")
    result = cli("send", CAMPAIGN)
    assert result.code == 0, result.stderr
    windows = relays(cli)[0]["windows"]
    assert sorted((w["limit"], w["seconds"], w["used"], w["next_slot_at"]) for w in windows) == [
        (100, 3600, 4, None), (2000, 86400, 4, None)]


@pytest.mark.parametrize(
    ("name", "value"),
    [("MAILER_QUOTA", "lots"), ("MAILER_QUOTA", "12/fortnight"),
     ("MAILER_QUOTA_COOLDOWN", "soon")],
)
def test_a_bad_budget_setting_is_a_configuration_error(
    setup: Setup, smtp_server: ScriptedSMTPServer, monkeypatch: pytest.MonkeyPatch,
    name: str, value: str,
) -> None:
    cli = setup(smtp_server, emails(2))
    monkeypatch.setenv(name, value)
    result = cli("send", CAMPAIGN)
    assert result.code == 78, (result.stdout, result.stderr)
    assert name in the_error(result)
    assert smtp_server.connections == 0


# --- 5. several relays -----------------------------------------------------------------------


def write_relays(folder: Path, *tables: dict[str, object]) -> None:
    """mailer.toml in the CLI's working directory, one [[relay]] table each."""
    lines: list[str] = []
    for table in tables:
        lines.append("[[relay]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
        lines.append("")
    (folder / "mailer.toml").write_text("\n".join(lines), encoding="utf-8")


def relay_table(name: str, server: ScriptedSMTPServer, **more: object) -> dict[str, object]:
    return {"name": name, "host": server.host, "port": server.port, "security": "none", **more}


def relay_of_each_sent_attempt() -> dict[str, str | None]:
    """email -> the `relay` of its attempt that sent it (attempts.relay)."""
    rows = query("SELECT s.email, a.relay FROM attempts a "
                 "JOIN deliveries d ON d.id = a.delivery_id "
                 "JOIN subscribers s ON s.id = d.subscriber_id WHERE a.outcome = 'sent'")
    found: dict[str, str | None] = {}
    for email, relay in rows:
        assert email not in found, f"two sent attempts for {email}"
        found[email] = relay
    return found


def went_through(**servers: ScriptedSMTPServer) -> dict[str, str | None]:
    """email -> the name of the relay that has its copy."""
    found: dict[str, str | None] = {}
    for name, server in servers.items():
        found.update(dict.fromkeys(received(server), name))
    return found


def test_the_second_relay_takes_over_when_the_first_budget_is_spent(
    setup: Setup, smtp_server_factory: ServerFactory, tmp_path: Path
) -> None:
    first, second = smtp_server_factory(), smtp_server_factory()
    write_relays(tmp_path, relay_table("first", first, quota="5/day"),
                 relay_table("second", second))
    everyone = emails(20)
    cli = setup(None, everyone)
    result = cli("send", CAMPAIGN, "--json")
    assert result.code == 0, (result.stdout, result.stderr)
    assert json.loads(result.stdout)["counts"] == {**ZERO, "sent": 20}
    assert json.loads(result.stdout)["run"]["waiting"] is None  # the second sent the rest
    assert "used up" not in result.stderr
    assert first.accepted == 5
    assert second.accepted == 15
    assert_one_copy_each([first, second], everyone)
    assert relay_of_each_sent_attempt() == went_through(first=first, second=second)
    assert {row[0] for row in query("SELECT relay FROM attempts")} <= {"first", "second"}
    shown = relays(cli)
    assert [r["name"] for r in shown] == ["first", "second"]
    assert [(w["limit"], w["seconds"], w["used"]) for w in shown[0]["windows"]] == [
        (5, 86400, 5)]
    assert shown[1]["windows"] == []
    assert cli("send", CAMPAIGN).code == 0
    assert (first.accepted, second.accepted) == (5, 15)  # nothing twice
    assert bounced(cli) == 0


def test_the_second_relay_takes_over_when_the_first_refuses_for_its_quota(
    setup: Setup, smtp_server_factory: ServerFactory, tmp_path: Path
) -> None:
    """No budget declared: the first relay accepts 5 and then refuses (550 5.4.5). It is
    paused and the second sends the rest, in the same run (CONTRACT: the next relay takes
    over when one is paused); nobody charged for the refusal."""
    first, second = smtp_server_factory(), smtp_server_factory()
    quota = first.refuse("rcpt", GMAIL, after=5)
    write_relays(tmp_path, relay_table("first", first), relay_table("second", second))
    everyone = emails(20)
    cli = setup(None, everyone)
    result = cli("send", CAMPAIGN, "--concurrency", "1")
    assert result.code == 0, (result.stdout, result.stderr)
    assert quota.refused >= 1
    assert first.accepted == 5
    assert second.accepted == 15
    assert_one_copy_each([first, second], everyone)
    assert {(state, attempts) for state, attempts, _ in ledger().values()} == {("sent", 1)}
    assert relay_of_each_sent_attempt() == went_through(first=first, second=second)
    assert paused_until(cli, 0) is not None
    assert paused_until(cli, 1) is None
    assert bounced(cli) == 0


def test_a_relay_refusing_the_credentials_stops_only_itself(
    setup: Setup, smtp_server_factory: ServerFactory, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # AUTH over plain text: aiosmtpd allows it when told, mailer on a loopback relay.
    first = smtp_server_factory(auth={"lettre": "bon-mot-de-passe"}, auth_over_plain=True)
    second = smtp_server_factory()
    write_relays(
        tmp_path,
        relay_table("first", first, username="lettre", password_env="RELAY_FIRST_PASSWORD"),
        relay_table("second", second),
    )
    everyone = emails(12)
    cli = setup(None, everyone)
    monkeypatch.setenv("RELAY_FIRST_PASSWORD", "mauvais-mot")
    result = cli("send", CAMPAIGN)
    assert result.code == 0, (result.stdout, result.stderr)
    assert "mauvais-mot" not in result.stdout + result.stderr
    assert first.accepted == 0
    assert first.connections >= 1  # it was tried
    assert second.accepted == 12
    assert_one_copy_each([first, second], everyone)
    assert set(relay_of_each_sent_attempt().values()) == {"second"}
    assert counts(cli) == {**ZERO, "sent": 12}
    assert bounced(cli) == 0
