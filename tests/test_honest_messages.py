"""Honest messages (issue 14, items 1–6 and the base64 half of 16): what `send`, `retry`,
`status`, `report` and `preview` say matches what happened, and no error shows the password.

Real parts: the scripted aiosmtpd relay, real `mailer` child processes (one killed with
SIGKILL, one piped into `head`), and both databases through the `cli` fixture.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiosmtplib import SMTPAuthenticationError, SMTPRecipientRefused, SMTPResponseException

from mailer.core.delivery import Reply, Stage
from mailer.core.errors import MailerError
from mailer.sending.smtperrors import translate_smtp_error
from tests.conftest import REPO_TEMPLATES

if TYPE_CHECKING:
    from tests.smtpserver import ScriptedSMTPServer

CAMPAIGN = "closure-notice"
EXAMPLE = Path(__file__).parent.parent / "examples" / "abonnes-excel.csv"
ACTIVE = 7  # valid, distinct addresses of the example list


@pytest.fixture
def relay(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Point the CLI at a relay; import a list of addresses; return the cli runner."""
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")

    def setup(server: ScriptedSMTPServer, addresses: list[str], **env: str) -> Any:
        for name, value in {"MAILER_SMTP_HOST": server.host, "MAILER_SMTP_PORT": str(server.port),
                            "MAILER_SMTP_SECURITY": server.tls, "MAILER_SMTP_TIMEOUT": "3",
                            **env}.items():
            monkeypatch.setenv(name, value)
        path = tmp_path / "list.csv"
        rows = [f"{a},Hélène,Dupont" for a in addresses]
        path.write_text("email,first_name,last_name\n" + "\n".join(rows) + "\n", "utf-8")
        assert cli("import", str(path)).code == 0
        return cli

    return setup


@pytest.fixture
def listed(cli, tmp_path: Path):  # type: ignore[no-untyped-def]
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")
    assert cli("import", str(EXAMPLE)).code == 0
    return cli


# --- 1. held deliveries --------------------------------------------------------------------


def test_deliveries_held_by_a_killed_send_are_named_with_their_holder(  # type: ignore[no-untyped-def]
    relay, smtp_server_factory, tmp_path: Path
) -> None:
    server = smtp_server_factory(stall_seconds=5)
    cli = relay(server, [f"stall{i}@asso.fr" for i in range(6)])
    env = dict(os.environ)
    child = subprocess.Popen(
        [sys.executable, "-m", "mailer", "send", CAMPAIGN], cwd=tmp_path, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not server.rcpt_attempts("stall0@asso.fr") and time.monotonic() < deadline:
            time.sleep(0.02)  # a RCPT: the claim (state `sending`, leased) is committed
        assert server.rcpt_attempts("stall0@asso.fr")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    host = socket.gethostname()[:60]
    holder = f"held by a process that stopped (pid {child.pid} on host {host}) until "

    retried = cli("retry")
    assert retried.code == 0, retried.stderr
    assert retried.stdout.startswith("Nothing is due.\n")
    assert f"{CAMPAIGN}: 6 {holder}" in retried.stdout
    assert "`mailer retry` after that resends them" in retried.stdout

    data = json.loads(cli("status", CAMPAIGN, "--json").stdout)
    assert data["counts"]["sending"] == 6
    held = data["held"]
    assert held["count"] == 6
    assert held["until"] is not None
    [owner] = held["owners"]
    assert (owner["host"], owner["pid"], owner["stopped"], owner["count"]) == (
        host, child.pid, True, 6)
    assert owner["until"] == held["until"]
    everything = json.loads(cli("status", "--json").stdout)
    assert everything["campaigns"][0]["held"]["count"] == 6

    human = cli("status")
    assert f"6 {holder}" in human.stdout
    sent = cli("send", CAMPAIGN)
    assert sent.code == 0, sent.stderr
    assert "Still to send: 6" in sent.stdout
    assert f"Held: 6 {holder}" in sent.stdout


def test_a_running_holder_is_not_called_stopped(cli, listed) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import create_engine, update

    from mailer.store.models import Delivery

    assert listed("send", CAMPAIGN, "--outbox", "out", "--limit", "1").code == 0
    until = datetime.now(UTC) + timedelta(minutes=10)
    engine = create_engine(os.environ["MAILER_DATABASE_URL"])
    with engine.begin() as connection:
        connection.execute(update(Delivery).where(Delivery.state == "pending").values(
            state="sending", lease_owner=f"{socket.gethostname()[:60]}:{os.getpid()}:abc123",
            lease_expires_at=until))
        connection.execute(update(Delivery).where(Delivery.state == "sent").values(
            state="sending", lease_owner="elsewhere.example:4242:abc123",
            lease_expires_at=until))
    engine.dispose()
    data = json.loads(listed("status", CAMPAIGN, "--json").stdout)
    owners = {o["host"]: o for o in data["held"]["owners"]}
    assert owners["elsewhere.example"]["stopped"] is None
    assert owners["elsewhere.example"]["pid"] == 4242
    assert owners[socket.gethostname()[:60]]["stopped"] is False
    human = listed("status", CAMPAIGN).stdout
    assert "1 held by pid 4242 on host elsewhere.example until " in human
    assert f"{ACTIVE - 1} held by pid {os.getpid()} on host" in human
    assert "(still running)" in human
    assert "stopped" not in human


# --- 2. nobody new to queue ----------------------------------------------------------------


def test_a_resumed_send_says_what_is_queued_not_that_nothing_would_be_sent(listed) -> None:  # type: ignore[no-untyped-def]
    assert listed("send", CAMPAIGN, "--outbox", "out", "--limit", "3").code == 0
    result = listed("send", CAMPAIGN, "--outbox", "out")
    assert result.code == 0, result.stderr
    assert "nothing would be sent" not in result.stdout
    assert f"Warning: no new subscriber to queue: {ACTIVE - 3} already queued, 3 already sent" \
        in result.stdout
    assert f"{ACTIVE - 3} sent" in result.stdout


# --- 3. the relay goes away mid-run --------------------------------------------------------


def test_a_relay_gone_mid_run_prints_the_summary_then_the_error(  # type: ignore[no-untyped-def]
    relay, smtp_server_factory
) -> None:
    server = smtp_server_factory(slow_seconds=0.05)
    cli = relay(server, [f"slow{i}@asso.fr" for i in range(30)], MAILER_CONCURRENCY="2")

    def stop_later() -> None:
        while len(server.messages) < 4:
            time.sleep(0.01)
        server.stop()

    stopper = threading.Thread(target=stop_later)
    stopper.start()
    result = cli("send", CAMPAIGN)
    stopper.join()
    assert result.code == 75, result.stderr
    assert result.stderr.startswith("Error: ")
    counts = json.loads(cli("status", CAMPAIGN, "--json").stdout)["counts"]
    waiting = counts["pending"] + counts["deferred"] + counts["uncertain"]
    [line] = [x for x in result.stdout.splitlines() if "stopped early" in x]
    assert line.startswith(f"{CAMPAIGN}: stopped early: {counts['sent']} sent, ")
    assert f"{counts['uncertain']} uncertain in this run" in line
    assert f"still waiting: {waiting}" in line
    assert "mailer retry" in line


# --- 4. report: nobody missed, a closed pipe, private files --------------------------------


def test_a_report_with_nobody_missed_says_so(listed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert listed("send", CAMPAIGN, "--outbox", "out").code == 0
    result = listed("report", CAMPAIGN)
    assert result.code == 0
    assert result.stdout.count("\n") == 1  # the header
    assert "Nobody missed" in result.stderr
    failed = listed("report", CAMPAIGN, "--state", "failed")
    assert "No delivery in state failed." in failed.stderr
    some = listed("report", CAMPAIGN, "--state", "sent", "--csv", "sent.csv")
    assert some.stderr == ""
    old = os.umask(0o022)
    try:
        assert listed("report", CAMPAIGN, "--state", "sent", "--csv", "again.csv").code == 0
    finally:
        os.umask(old)
    for name in ("sent.csv", "again.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
        rows = list(csv.reader((tmp_path / name).read_text("utf-8-sig").splitlines()))
        assert len(rows) == ACTIVE + 1


def test_a_report_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["MAILER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'subscribers.db'}"
    lines = ["email,first_name,last_name"]
    lines += [f"personne{i:05d}@asso.fr,Hélène,Dupont{i}" for i in range(2500)]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n", "utf-8")
    mailer = [sys.executable, "-m", "mailer"]
    for args in (["import", "list.csv"], ["send", CAMPAIGN, "--outbox", "out", "--limit", "1"]):
        subprocess.run([*mailer, *args], cwd=tmp_path, env=env, check=True,
                       capture_output=True)
    report = subprocess.Popen([*mailer, "report", CAMPAIGN], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(["head", "-3"], stdin=report.stdout, stdout=subprocess.PIPE)
    assert report.stdout is not None
    assert report.stderr is not None
    report.stdout.close()  # head alone reads the pipe: its exit closes it
    shown, _ = head.communicate(timeout=60)
    errors = report.stderr.read().decode()
    assert report.wait(timeout=60) == 0, errors
    assert len(shown.decode().splitlines()) == 3
    assert errors == ""  # no traceback, no "Exception ignored ... BrokenPipeError"


# --- 5. preview of a non-ASCII address -----------------------------------------------------


def test_preview_shows_utf8_headers_decoded(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")
    (tmp_path / "list.csv").write_text(
        "email,first_name,last_name\nzoé@example.org,Zoé,Faure\n", "utf-8")
    assert cli("import", "list.csv").code == 0
    result = cli("preview", CAMPAIGN, "--email", "zoé@example.org")
    assert result.code == 0, result.stderr
    assert "\ufffd" not in result.stdout
    assert "To: Zoé Faure <zoé@example.org>" in result.stdout.splitlines()
    assert "Reply-To: \"Martine Buron, présidente du Cime\" <contact@cime.example.org>" \
        in result.stdout.splitlines()


# --- 6. a relay that wants a login ---------------------------------------------------------


def test_a_relay_that_wants_a_login_names_the_variables(relay, smtp_server_factory) -> None:  # type: ignore[no-untyped-def]
    server = smtp_server_factory(auth={"lettre": "mot-de-passe"}, auth_over_plain=True)
    cli = relay(server, ["ok@asso.fr", "ok2@asso.fr"])
    result = cli("send", CAMPAIGN)
    assert result.code == 78, result.stderr
    assert "wants a login" in result.stderr
    assert "530" in result.stderr
    assert "MAILER_SMTP_USERNAME" in result.stderr
    assert "MAILER_SMTP_PASSWORD_FILE" in result.stderr
    assert "set a sender" not in result.stderr
    counts = json.loads(cli("status", CAMPAIGN, "--json").stdout)["counts"]
    assert counts["pending"] == 2  # nobody marked


# --- 16. the password's base64 forms are scrubbed ------------------------------------------

PASSWORD = "s3cr3t-P4ssw0rd!"


def _forms(username: str) -> list[str]:
    """What a relay may echo: the password, its base64 (AUTH LOGIN), AUTH PLAIN's string."""
    login = base64.b64encode(PASSWORD.encode()).decode()
    plain = base64.b64encode(f"\0{username}\0{PASSWORD}".encode()).decode()
    return [PASSWORD, login, login.rstrip("="), plain]


def _leaks(text: str) -> bool:
    inner = base64.b64encode(PASSWORD.encode()).decode()[:12]
    return PASSWORD in text or inner in text or any(
        base64.b64encode(f"\0{u}\0{PASSWORD}".encode()).decode()[4:-4] in text
        for u in ("a", "ab", "abc", "lettre")
    )


@pytest.mark.parametrize("username", ["a", "ab", "abc", "lettre"])
def test_no_error_message_carries_the_password_in_base64(username: str) -> None:
    for form in _forms(username):
        echoes: list[tuple[Exception, Stage]] = [
            (SMTPAuthenticationError(535, f"5.7.8 bad credentials: {form}"), Stage.CONNECT),
            (SMTPResponseException(454, f"4.7.0 AUTH PLAIN {form} refused"), Stage.CONNECT),
            (SMTPRecipientRefused(550, f"5.7.1 not with {form}", "x@asso.fr"), Stage.RCPT),
        ]
        for exc, stage in echoes:
            outcome = translate_smtp_error(exc, stage, relay="relay:587", secret=PASSWORD)
            if isinstance(outcome, MailerError):
                text = f"{outcome.message} {outcome.hint or ''}"
            else:
                assert isinstance(outcome, Reply)
                text = outcome.text
            assert "***" in text
            assert not _leaks(text), text
